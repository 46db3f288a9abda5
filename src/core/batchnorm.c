/* Batch normalization over the rows of a mini-batch (layers.h). The batch
 * sums go through an optional reduce hook so that --sync-bn can add them
 * across ranks without this file knowing about MPI. */
#include <math.h>
#include <string.h>

#include "nndist/layers.h"

int nd_bn_forward_train(float *x, float *xhat, float *inv_std, float *sums, const float *gamma, const float *beta,
                        float eps, int batch, int n, nd_reduce_fn reduce, void *ctx) {
    float *s1 = sums, *s2 = sums + n;
    memset(sums, 0, sizeof(float) * (2 * (size_t)n + 1));
    for (int i = 0; i < batch; ++i) { /* row-major passes: contiguous in x */
        const float *r = x + (size_t)i * n;
        for (int j = 0; j < n; ++j) s1[j] += r[j], s2[j] += r[j] * r[j];
    }
    sums[2 * (size_t)n] = (float)batch;
    if (reduce && reduce(ctx, sums, 2 * (size_t)n + 1) != 0) return -1;
    const float rows = sums[2 * (size_t)n];
    /* s1 becomes the mean and inv_std the scale; the variance is biased,
     * as in the original paper's normalization step. */
    for (int j = 0; j < n; ++j) {
        const float mean = s1[j] / rows, var = fmaxf(s2[j] / rows - mean * mean, 0.0f);
        s1[j] = mean;
        inv_std[j] = 1.0f / sqrtf(var + eps);
    }
    for (int i = 0; i < batch; ++i) {
        float *r = x + (size_t)i * n, *h = xhat + (size_t)i * n;
        for (int j = 0; j < n; ++j) {
            h[j] = (r[j] - s1[j]) * inv_std[j];
            r[j] = gamma[j] * h[j] + beta[j];
        }
    }
    return 0;
}

void nd_bn_forward_eval(float *x, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                        int batch, int n) {
    for (int i = 0; i < batch; ++i) {
        float *r = x + (size_t)i * n;
        for (int j = 0; j < n; ++j) r[j] = gamma[j] * (r[j] - mean[j]) / sqrtf(var[j] + eps) + beta[j];
    }
}

int nd_bn_backward(float *dy, float *dgamma, float *dbeta, float *sums, const float *xhat, const float *inv_std,
                   const float *gamma, int batch, int n, nd_reduce_fn reduce, void *ctx) {
    float *sdy = sums, *sdyx = sums + n;
    memset(sums, 0, sizeof(float) * (2 * (size_t)n + 1));
    for (int i = 0; i < batch; ++i) {
        const float *d = dy + (size_t)i * n, *h = xhat + (size_t)i * n;
        for (int j = 0; j < n; ++j) sdy[j] += d[j], sdyx[j] += d[j] * h[j];
    }
    /* The parameter gradients are this rank's part; the trainer's
     * allreduce adds the rest. */
    for (int j = 0; j < n; ++j) dgamma[j] += sdyx[j], dbeta[j] += sdy[j];
    sums[2 * (size_t)n] = (float)batch;
    if (reduce && reduce(ctx, sums, 2 * (size_t)n + 1) != 0) return -1;
    const float rows = sums[2 * (size_t)n];
    /* dx = inv_std * gamma * (dy - mean(dy) - xhat * mean(dy * xhat)) */
    for (int j = 0; j < n; ++j) sdy[j] /= rows, sdyx[j] /= rows;
    for (int i = 0; i < batch; ++i) {
        float *d = dy + (size_t)i * n;
        const float *h = xhat + (size_t)i * n;
        for (int j = 0; j < n; ++j) d[j] = gamma[j] * inv_std[j] * (d[j] - sdy[j] - h[j] * sdyx[j]);
    }
    return 0;
}
