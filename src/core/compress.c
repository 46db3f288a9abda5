#include "nndist/compress.h"

#include <math.h>

#include "nndist/blas.h"

size_t nd_topk_count(size_t n, double ratio) {
    double k = ceil(ratio * (double)n);
    if (k < 1.0) k = 1.0;
    return k > (double)n ? n : (size_t)k;
}

static float magnitude(float v) { return isnan(v) ? INFINITY : fabsf(v); }

/* Quickselect for the k-th largest with a three-way partition (ties, even
 * a constant vector, stay linear); median-of-three pivots. */
float nd_topk_threshold(const float *a, size_t n, size_t k, float *s) {
    for (size_t i = 0; i < n; ++i) s[i] = magnitude(a[i]);
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

void nd_topk_select(const float *a, size_t n, size_t k, float *scratch, nd_topk_pair *out) {
    const float t = nd_topk_threshold(a, n, k, scratch);
    size_t above = 0;
    for (size_t i = 0; i < n; ++i) above += magnitude(a[i]) > t;
    size_t ties = k - above, w = 0; /* the first `ties` entries equal to t go too */
    for (size_t i = 0; i < n && w < k; ++i) {
        const float m = magnitude(a[i]);
        const int tie = m == t && ties > 0;
        if (m > t || tie) {
            ties -= (size_t)tie;
            out[w++] = (nd_topk_pair){(uint32_t)i, a[i]};
        }
    }
}

void nd_psgd_multiply_q(const float *m, const nd_psgd_matrix *mats, int count, int r, const float *q, float *p) {
    for (int i = 0; i < count; ++i) {
        const nd_psgd_matrix *x = &mats[i];
        nd_sgemm(false, false, x->rows, r, x->cols, 1.0f, m + x->offset, x->cols, q + x->q_offset, r, 0.0f,
                 p + x->p_offset, r);
    }
}

void nd_psgd_multiply_p(const float *m, const nd_psgd_matrix *mats, int count, int r, const float *p, float *q) {
    for (int i = 0; i < count; ++i) {
        const nd_psgd_matrix *x = &mats[i];
        nd_sgemm(true, false, x->cols, r, x->rows, 1.0f, m + x->offset, x->cols, p + x->p_offset, r, 0.0f,
                 q + x->q_offset, r);
    }
}

void nd_psgd_decompress(float *m, const nd_psgd_matrix *mats, int count, int r, const float *p, const float *q) {
    for (int i = 0; i < count; ++i) {
        const nd_psgd_matrix *x = &mats[i];
        nd_sgemm(false, true, x->rows, x->cols, r, 1.0f, p + x->p_offset, r, q + x->q_offset, r, 0.0f, m + x->offset,
                 x->cols);
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
