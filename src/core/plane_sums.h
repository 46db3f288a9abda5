/* Private to the core: sums over the values of a plane (a channel's pixels)
 * in a fixed order that the compiler can vectorize: 16 float lanes, each
 * over every 16th value, then the lanes added in double. Strict left-to-
 * right sums in one accumulator are a chain of dependent adds that cannot
 * be vectorized without reordering, which would change the bits. */
#ifndef NNDIST_PLANE_SUMS_H
#define NNDIST_PLANE_SUMS_H

#include <stddef.h>

enum { ND_LANES = 16 };

/* sum of x (n) */
static inline double nd_plane_sum(const float *x, size_t n) {
    float lane[ND_LANES] = {0};
    size_t i = 0;
    for (; i + ND_LANES <= n; i += ND_LANES)
        for (int j = 0; j < ND_LANES; ++j) lane[j] += x[i + j];
    double s = 0.0;
    for (int j = 0; j < ND_LANES; ++j) s += lane[j];
    for (; i < n; ++i) s += x[i];
    return s;
}

/* sum of x (n) into *s1 and of x * y (n) into *s2 (y = x: the sum of squares) */
static inline void nd_plane_sum_dot(const float *x, const float *y, size_t n, double *s1, double *s2) {
    float a[ND_LANES] = {0}, b[ND_LANES] = {0};
    size_t i = 0;
    for (; i + ND_LANES <= n; i += ND_LANES)
        for (int j = 0; j < ND_LANES; ++j) a[j] += x[i + j], b[j] += x[i + j] * y[i + j];
    double u = 0.0, v = 0.0;
    for (int j = 0; j < ND_LANES; ++j) u += a[j], v += b[j];
    for (; i < n; ++i) u += x[i], v += (double)x[i] * y[i];
    *s1 += u, *s2 += v;
}

/* As nd_plane_sum_dot(x, y, ...) after x = (keep > 0 ? x : 0), stored back
 * into x in the same pass: the gradient through a ReLU whose output is keep
 * (n), then its sums. The lanes and their order are those of
 * nd_plane_sum_dot, so the bits are too. */
static inline void nd_plane_relu_sum_dot(float *x, const float *y, const float *keep, size_t n, double *s1,
                                         double *s2) {
    float a[ND_LANES] = {0}, b[ND_LANES] = {0};
    size_t i = 0;
    for (; i + ND_LANES <= n; i += ND_LANES)
        for (int j = 0; j < ND_LANES; ++j) {
            const float v = keep[i + j] > 0.0f ? x[i + j] : 0.0f;
            x[i + j] = v;
            a[j] += v, b[j] += v * y[i + j];
        }
    double u = 0.0, v = 0.0;
    for (int j = 0; j < ND_LANES; ++j) u += a[j], v += b[j];
    for (; i < n; ++i) {
        x[i] = keep[i] > 0.0f ? x[i] : 0.0f;
        u += x[i], v += (double)x[i] * y[i];
    }
    *s1 += u, *s2 += v;
}

#endif
