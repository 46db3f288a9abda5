#include "nndist/regularize.h"

#include <math.h>

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
