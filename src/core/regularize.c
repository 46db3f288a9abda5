#include "nndist/regularize.h"

#include <math.h>

double nd_reg_value_from_gradient(nd_reg_gradient_fn grad, void *ctx, const float *w, size_t n, float *scratch) {
    float *wt = scratch, *g = scratch + n;
    const double node[2] = {0.5 - 0.5 / sqrt(3.0), 0.5 + 0.5 / sqrt(3.0)}; /* weights 1/2 each */
    double value = 0.0;
    for (int k = 0; k < 2; ++k) {
        for (size_t i = 0; i < n; ++i) wt[i] = (float)(node[k] * w[i]);
        grad(ctx, wt, g);
        for (size_t i = 0; i < n; ++i) value += 0.5 * (double)g[i] * w[i];
    }
    return value;
}

void nd_reg_l1(float *g, const float *w, size_t n, float coeff) {
    for (size_t i = 0; i < n; ++i) g[i] += w[i] > 0.0f ? coeff : (w[i] < 0.0f ? -coeff : 0.0f);
}

int nd_reg_max_norm(float *w, int rows, int cols, float c) {
    int clamped = 0;
    for (int r = 0; r < rows; ++r) {
        float *row = w + (size_t)r * cols;
        double sq = 0.0;
        for (int j = 0; j < cols; ++j) sq += (double)row[j] * row[j];
        const double norm = sqrt(sq);
        if (norm <= c) continue;
        const float f = (float)(c / norm);
        for (int j = 0; j < cols; ++j) row[j] *= f;
        ++clamped;
    }
    return clamped;
}

void nd_reg_l2(float *g, const float *w, size_t n, float coeff) {
    for (size_t i = 0; i < n; ++i) g[i] += coeff * w[i];
}
