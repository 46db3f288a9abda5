/* Feature standardization with statistics over the whole training split.
 *
 * Each rank accumulates sums over its own rows (nd_stats_accumulate), the
 * trainer adds the sums across ranks, and every rank derives the same
 * mean/scale from them (nd_stats_finish), so all replicas see identically
 * normalized data. */
#ifndef NNDIST_NORMALIZE_H
#define NNDIST_NORMALIZE_H

#include <stddef.h>

typedef enum {
    ND_NORM_GLOBAL = 0, /* one mean/std over every feature value (as the peer) */
    ND_NORM_FEATURE,    /* a mean/std per feature column */
    ND_NORM_NONE,
    ND_NORM_MINMAX /* each feature scaled to [-1, 1] by its min and max */
} nd_norm_kind;

int nd_norm_parse(const char *name, nd_norm_kind *kind);
/* The names of the normalizations, indexed by nd_norm_kind, NULL-terminated. */
extern const char *const nd_norm_names[];
const char *nd_norm_name(nd_norm_kind kind);

/* sums (2*cols + 1): [0,cols) sum of x, [cols,2cols) sum of x^2, [2cols]
 * row count. Adds the rows x (rows x cols) in double precision. */
void nd_stats_accumulate(double *sums, const float *x, size_t rows, int cols);

/* From the global sums, writes mean (cols) and inv_std (cols) for kind.
 * Columns with (near) zero spread are only centred (inv_std = 1). */
void nd_stats_finish(const double *sums, int cols, nd_norm_kind kind, float *mean, float *inv_std);

/* range (2*cols): [0,cols) running maximum of x, [cols,2cols) running
 * maximum of -x (so one max-reduction across ranks gives both ends). Start
 * from -INFINITY everywhere. */
void nd_range_accumulate(double *range, const float *x, size_t rows, int cols);

/* From the global range: mean = the midpoint, inv_std = 2 / (max - min),
 * so x maps into [-1, 1]; constant columns are only centred. */
void nd_range_finish(const double *range, int cols, float *mean, float *inv_std);

/* x (rows x cols) = (x - mean) * inv_std, in place. */
void nd_normalize_apply(float *x, size_t rows, int cols, const float *mean, const float *inv_std);

#endif
