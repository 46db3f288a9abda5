/* The arithmetic of the compressed gradient exchanges (no MPI): top-k
 * selection (Lin et al. 2018, Deep Gradient Compression) and PowerSGD's
 * low-rank steps (Vogels et al. 2019). The exchanges in src/run/exchanges/
 * (topk.c, powersgd.c) put the collectives and the error feedback around
 * them. None allocates. */
#ifndef NNDIST_COMPRESS_H
#define NNDIST_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

/* One sent entry of a top-k gradient: its index in the compressed range and
 * its value. 8 bytes on the wire. */
typedef struct {
    uint32_t index;
    float value;
} nd_topk_pair;

/* Entries sent of n at fraction ratio: ceil(ratio n), at least 1, at most n. */
size_t nd_topk_count(size_t n, double ratio);

/* The k-th largest |a[i]| of a (n), 1 <= k <= n, by quickselect on all
 * the magnitudes copied into scratch (n): O(n) on average. A NaN counts as
 * +infinity (it is sent, and the guard sees it). */
float nd_topk_threshold(const float *a, size_t n, size_t k, float *scratch);

/* The k entries of a (n) of largest magnitude into out (k), in index order;
 * ties at the threshold go to the lowest indices, so the choice is a pure
 * function of a. A strided sample guesses a threshold first, as DGC does,
 * so that the exact selection runs on few entries. scratch (n) and where
 * (n) are workspace. */
void nd_topk_select(const float *a, size_t n, size_t k, float *scratch, uint32_t *where, nd_topk_pair *out);

/* Error feedback's step: e (n) += g (n), then nd_topk_select of e, the
 * addition in the selection's first pass. */
void nd_topk_accumulate_select(float *e, const float *g, size_t n, size_t k, float *scratch, uint32_t *where,
                               nd_topk_pair *out);

/* PowerSGD: one gradient tensor seen as a rows x cols row-major matrix at
 * offset of the arena, with its P (rows x r) and Q (cols x r) at p_offset
 * and q_offset of the P and Q buffers. */
typedef struct {
    size_t offset, p_offset, q_offset;
    int rows, cols;
} nd_psgd_matrix;

/* P = M Q for every matrix: m the arena (and with add, an arena of the
 * same layout, m += add first, in the same pass), q and p the buffers. */
void nd_psgd_multiply_q(float *m, const float *add, const nd_psgd_matrix *mats, int count, int r, const float *q,
                        float *p);
/* Q = M^T P for every matrix. */
void nd_psgd_multiply_p(const float *m, const nd_psgd_matrix *mats, int count, int r, const float *p, float *q);
/* M' = P Q^T into the arena m for every matrix; with residual (an arena of
 * the same layout), also residual -= share M'. */
void nd_psgd_decompress(float *m, float *residual, float share, const nd_psgd_matrix *mats, int count, int r,
                        const float *p, const float *q);

/* Gram-Schmidt (modified, in double) on the r columns of p (rows x r,
 * row-major): orthonormal columns; a column with nothing left of it
 * (linearly dependent, or zero) becomes zero. */
void nd_psgd_orthogonalize(float *p, int rows, int r);

#endif
