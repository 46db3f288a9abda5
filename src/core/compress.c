#include "nndist/compress.h"

#include <math.h>

#include "nndist/blas.h"

size_t nd_topk_count(size_t n, double ratio) {
    double k = ceil(ratio * (double)n);
    if (k < 1.0) k = 1.0;
    return k > (double)n ? n : (size_t)k;
}

/* |v|, a NaN as +infinity; branch-free. */
static inline float magnitude(float v) {
    const float m = fabsf(v);
    return m == m ? m : INFINITY;
}

/* The k-th largest of s (n), 1 <= k <= n, by quickselect with a three-way
 * partition (ties, even a constant vector, stay linear) and median-of-three
 * pivots; permutes s. */
static float kth_largest(float *s, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    const size_t want = k - 1; /* its place in descending order */
    while (lo < hi) {
        const float x = s[lo], y = s[lo + (hi - lo) / 2], z = s[hi];
        const float pivot = (x >= y) == (y >= z) ? y : (y >= x) == (x >= z) ? x : z;
        /* s[lo, lt) > pivot, s[lt, gt] == pivot, s(gt, hi] < pivot */
        size_t lt = lo, i = lo, gt = hi;
        while (i <= gt) {
            const float v = s[i];
            if (v > pivot) {
                s[i++] = s[lt], s[lt++] = v;
            } else if (v < pivot) {
                s[i] = s[gt], s[gt] = v;
                if (gt-- == lo) break;
            } else {
                ++i;
            }
        }
        if (want < lt) hi = lt - 1;
        else if (want > gt) lo = gt + 1;
        else return pivot;
    }
    return s[want];
}

enum { SAMPLE = 4096 };

float nd_topk_threshold(const float *a, size_t n, size_t k, float *s) {
    for (size_t i = 0; i < n; ++i) s[i] = magnitude(a[i]);
    return kth_largest(s, n, k);
}

/* As DGC, a strided sample of the magnitudes guesses a threshold below the
 * k-th (aiming at about 2k entries above it); one pass (which also adds
 * `add` into a, when given) keeps the indices of the entries above the
 * guess, and the exact k-th is selected among them; the output reads only
 * them. A guess that keeps fewer than k (a sample that misjudged) falls
 * back to selecting among all n. a is written only when add is given. */
static void select_core(float *a, const float *add, size_t n, size_t k, float *s, uint32_t *where, nd_topk_pair *out) {
    size_t kept = n;
    int added = add == NULL, sampled = 0;
    float t = 0.0f;
    if (n > 4 * SAMPLE) {
        const size_t stride = n / SAMPLE;
        for (size_t j = 0; j < SAMPLE; ++j) s[j] = magnitude(add ? a[j * stride] + add[j * stride] : a[j * stride]);
        size_t rank = (size_t)(2.0 * (double)k / (double)n * SAMPLE) + 8;
        if (rank > SAMPLE) rank = SAMPLE;
        const float guess = kth_largest(s, SAMPLE, rank);
        size_t c = 0;
        if (add) { /* the branches are rarely taken: cheaper than a store per entry */
            for (size_t i = 0; i < n; ++i) {
                const float v = a[i] + add[i];
                a[i] = v;
                if (!(fabsf(v) < guess)) where[c++] = (uint32_t)i; /* a NaN is kept */
            }
            added = 1;
        } else {
            for (size_t i = 0; i < n; ++i)
                if (!(fabsf(a[i]) < guess)) where[c++] = (uint32_t)i;
        }
        if (c >= k) {
            for (size_t j = 0; j < c; ++j) s[j] = magnitude(a[where[j]]);
            t = kth_largest(s, c, k);
            kept = c, sampled = 1;
        }
    }
    if (!sampled) {
        if (!added)
            for (size_t i = 0; i < n; ++i) a[i] += add[i];
        t = nd_topk_threshold(a, n, k, s);
    }
    size_t above = 0; /* every entry above t is among the kept */
    for (size_t j = 0; j < kept; ++j) above += magnitude(a[sampled ? where[j] : j]) > t;
    size_t ties = k - above, w = 0; /* the first `ties` entries equal to t go too */
    for (size_t j = 0; j < kept && w < k; ++j) {
        const size_t i = sampled ? where[j] : j;
        const float m = magnitude(a[i]);
        const int tie = m == t && ties > 0;
        if (m > t || tie) {
            ties -= (size_t)tie;
            out[w++] = (nd_topk_pair){(uint32_t)i, a[i]};
        }
    }
}

void nd_topk_select(const float *a, size_t n, size_t k, float *scratch, uint32_t *where, nd_topk_pair *out) {
    select_core((float *)a, NULL, n, k, scratch, where, out); /* without add, a is only read */
}

void nd_topk_accumulate_select(float *e, const float *g, size_t n, size_t k, float *scratch, uint32_t *where,
                               nd_topk_pair *out) {
    select_core(e, g, n, k, scratch, where, out);
}

/* The products go to BLAS: plain loops with r accumulators, tried, were
 * slower than OpenBLAS's packed GEMM at r = 4 (about 2x, in one sitting)
 * without -ffast-math, which the rest of the code base does not use. */
void nd_psgd_multiply_q(float *m, const float *add, const nd_psgd_matrix *mats, int count, int r, const float *q,
                        float *p) {
    for (int i = 0; i < count; ++i) {
        const nd_psgd_matrix *x = &mats[i];
        float *mx = m + x->offset;
        if (add) {
            const float *ax = add + x->offset;
            for (size_t j = 0; j < (size_t)x->rows * (size_t)x->cols; ++j) mx[j] += ax[j];
        }
        nd_sgemm(false, false, x->rows, r, x->cols, 1.0f, mx, x->cols, q + x->q_offset, r, 0.0f, p + x->p_offset, r);
    }
}

void nd_psgd_multiply_p(const float *m, const nd_psgd_matrix *mats, int count, int r, const float *p, float *q) {
    for (int i = 0; i < count; ++i) {
        const nd_psgd_matrix *x = &mats[i];
        nd_sgemm(true, false, x->cols, r, x->rows, 1.0f, m + x->offset, x->cols, p + x->p_offset, r, 0.0f,
                 q + x->q_offset, r);
    }
}

void nd_psgd_decompress(float *m, float *residual, float share, const nd_psgd_matrix *mats, int count, int r,
                        const float *p, const float *q) {
    for (int i = 0; i < count; ++i) {
        const nd_psgd_matrix *x = &mats[i];
        float *mx = m + x->offset;
        nd_sgemm(false, true, x->rows, x->cols, r, 1.0f, p + x->p_offset, r, q + x->q_offset, r, 0.0f, mx, x->cols);
        if (residual) {
            float *ex = residual + x->offset;
            for (size_t j = 0; j < (size_t)x->rows * (size_t)x->cols; ++j) ex[j] -= share * mx[j];
        }
    }
}

void nd_psgd_orthogonalize(float *p, int rows, int r) {
    for (int j = 0; j < r; ++j) {
        double start = 0.0, norm = 0.0;
        for (int i = 0; i < rows; ++i) start += (double)p[(size_t)i * r + j] * p[(size_t)i * r + j];
        /* Twice against the earlier columns ("twice is enough", Giraud et al. 2005): float columns stay
         * orthogonal to rounding even when P is ill-conditioned. */
        for (int pass = 0; pass < 2; ++pass)
            for (int c = 0; c < j; ++c) {
                double dot = 0.0;
                for (int i = 0; i < rows; ++i) dot += (double)p[(size_t)i * r + c] * p[(size_t)i * r + j];
                for (int i = 0; i < rows; ++i) p[(size_t)i * r + j] -= (float)(dot * p[(size_t)i * r + c]);
            }
        for (int i = 0; i < rows; ++i) norm += (double)p[(size_t)i * r + j] * p[(size_t)i * r + j];
        /* What is left of a dependent column is rounding noise: drop it. */
        const float inv = norm > 1e-10 * start && norm > 1e-60 ? (float)(1.0 / sqrt(norm)) : 0.0f;
        for (int i = 0; i < rows; ++i) p[(size_t)i * r + j] *= inv;
    }
}
