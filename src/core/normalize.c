#include "nndist/normalize.h"

#include <math.h>
#include <string.h>

const char *const nd_norm_names[] = {[ND_NORM_GLOBAL] = "global",
                                     [ND_NORM_FEATURE] = "feature",
                                     [ND_NORM_NONE] = "none",
                                     [ND_NORM_MINMAX] = "minmax",
                                     NULL};

int nd_norm_parse(const char *name, nd_norm_kind *kind) {
    for (int k = 0; k < 4; ++k)
        if (!strcmp(name, nd_norm_names[k])) {
            *kind = (nd_norm_kind)k;
            return 0;
        }
    return -1;
}

const char *nd_norm_name(nd_norm_kind kind) { return (unsigned)kind < 4 ? nd_norm_names[kind] : "?"; }

void nd_stats_accumulate(double *sums, const float *x, size_t rows, int cols) {
    double *s = sums, *q = sums + cols;
    for (size_t i = 0; i < rows; ++i) {
        const float *r = x + i * (size_t)cols;
        for (int j = 0; j < cols; ++j) {
            s[j] += r[j];
            q[j] += (double)r[j] * r[j];
        }
    }
    sums[2 * cols] += (double)rows;
}

void nd_stats_finish(const double *sums, int cols, nd_norm_kind kind, float *mean, float *inv_std) {
    const double n = sums[2 * cols];
    if (kind == ND_NORM_NONE || n <= 0) {
        for (int j = 0; j < cols; ++j) mean[j] = 0.0f, inv_std[j] = 1.0f;
        return;
    }
    if (kind == ND_NORM_GLOBAL) {
        double s = 0.0, q = 0.0;
        for (int j = 0; j < cols; ++j) s += sums[j], q += sums[cols + j];
        const double m = s / (n * cols), var = q / (n * cols) - m * m;
        const double is = var > 1e-12 ? 1.0 / sqrt(var) : 1.0;
        for (int j = 0; j < cols; ++j) mean[j] = (float)m, inv_std[j] = (float)is;
        return;
    }
    for (int j = 0; j < cols; ++j) {
        const double m = sums[j] / n, var = sums[cols + j] / n - m * m;
        mean[j] = (float)m;
        inv_std[j] = var > 1e-12 ? (float)(1.0 / sqrt(var)) : 1.0f;
    }
}

void nd_range_accumulate(double *range, const float *x, size_t rows, int cols) {
    double *hi = range, *neg_lo = range + cols;
    for (size_t i = 0; i < rows; ++i) {
        const float *r = x + i * (size_t)cols;
        for (int j = 0; j < cols; ++j) {
            if (r[j] > hi[j]) hi[j] = r[j];
            if (-r[j] > neg_lo[j]) neg_lo[j] = -r[j];
        }
    }
}

void nd_range_finish(const double *range, int cols, float *mean, float *inv_std) {
    for (int j = 0; j < cols; ++j) {
        const double hi = range[j], lo = -range[cols + j];
        mean[j] = (float)(0.5 * (hi + lo));
        inv_std[j] = hi - lo > 1e-12 ? (float)(2.0 / (hi - lo)) : 1.0f;
    }
}

void nd_normalize_apply(float *x, size_t rows, int cols, const float *mean, const float *inv_std) {
    for (size_t i = 0; i < rows; ++i) {
        float *r = x + i * (size_t)cols;
        for (int j = 0; j < cols; ++j) r[j] = (r[j] - mean[j]) * inv_std[j];
    }
}
