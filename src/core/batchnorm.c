/* Batch normalization over the rows of a mini-batch (layers.h), per dense
 * feature or per convolution channel. The batch sums go through an optional
 * reduce hook so that --sync-bn can add them across ranks without this file
 * knowing about MPI. */
#include <math.h>
#include <string.h>

#include "nndist/layers.h"
#include "plane_sums.h"

/* s1 (n) += sums of x (batch x n x spatial) per feature, s2 (n) += sums of
 * squares. Dense features (spatial 1) add row by row, contiguous in x; a
 * channel's planes are summed by nd_plane_sum_dot and added in double, so
 * that a channel of thousands of values keeps the low bits of its mean
 * before the square is taken off. The order is fixed either way. */
static void feature_sums(const float *x, float *s1, float *s2, int batch, int n, int spatial) {
    if (spatial == 1) {
        for (int i = 0; i < batch; ++i) {
            const float *r = x + (size_t)i * n;
            for (int j = 0; j < n; ++j) s1[j] += r[j], s2[j] += r[j] * r[j];
        }
        return;
    }
    for (int j = 0; j < n; ++j) {
        double a = 0.0, b = 0.0;
        for (int i = 0; i < batch; ++i) {
            const float *r = x + ((size_t)i * n + j) * spatial;
            nd_plane_sum_dot(r, r, (size_t)spatial, &a, &b);
        }
        s1[j] = (float)a, s2[j] = (float)b;
    }
}

int nd_bn_forward_train(float *x, float *xhat, float *inv_std, float *sums, const float *gamma, const float *beta,
                        float eps, int batch, int n, int spatial, int relu, nd_reduce_fn reduce, void *ctx) {
    float *s1 = sums, *s2 = sums + n;
    memset(sums, 0, sizeof(float) * (2 * (size_t)n + 1));
    feature_sums(x, s1, s2, batch, n, spatial);
    sums[2 * (size_t)n] = (float)batch * (float)spatial;
    if (reduce && reduce(ctx, sums, 2 * (size_t)n + 1) != 0) return -1;
    const float count = sums[2 * (size_t)n];
    /* s1 becomes the mean and inv_std the scale; the variance is biased,
     * as in the original paper's normalization step. */
    for (int j = 0; j < n; ++j) {
        const float mean = s1[j] / count, var = fmaxf(s2[j] / count - mean * mean, 0.0f);
        s1[j] = mean;
        inv_std[j] = 1.0f / sqrtf(var + eps);
    }
    for (int i = 0; i < batch; ++i) {
        float *r = x + (size_t)i * n * spatial, *h = xhat + (size_t)i * n * spatial;
        if (spatial == 1) /* one contiguous pass over the row */
            for (int j = 0; j < n; ++j) {
                h[j] = (r[j] - s1[j]) * inv_std[j];
                r[j] = gamma[j] * h[j] + beta[j];
                if (relu) r[j] = r[j] > 0.0f ? r[j] : 0.0f;
            }
        else
            for (int j = 0; j < n; ++j, r += spatial, h += spatial) {
                const float mean = s1[j], inv = inv_std[j], g = gamma[j], b = beta[j];
                if (relu)
                    for (int s = 0; s < spatial; ++s) {
                        h[s] = (r[s] - mean) * inv;
                        const float v = g * h[s] + b;
                        r[s] = v > 0.0f ? v : 0.0f;
                    }
                else
                    for (int s = 0; s < spatial; ++s) {
                        h[s] = (r[s] - mean) * inv;
                        r[s] = g * h[s] + b;
                    }
            }
    }
    return 0;
}

void nd_bn_forward_eval(float *x, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                        int batch, int n, int spatial) {
    for (int i = 0; i < batch; ++i) {
        float *r = x + (size_t)i * n * spatial;
        for (int j = 0; j < n; ++j)
            for (int s = 0; s < spatial; ++s, ++r) *r = gamma[j] * (*r - mean[j]) / sqrtf(var[j] + eps) + beta[j];
    }
}

int nd_bn_backward(float *dy, float *dgamma, float *dbeta, float *sums, const float *xhat, const float *inv_std,
                   const float *gamma, const float *relu_out, int batch, int n, int spatial, nd_reduce_fn reduce,
                   void *ctx) {
    float *sdy = sums, *sdyx = sums + n;
    memset(sums, 0, sizeof(float) * (2 * (size_t)n + 1));
    if (relu_out) /* the ReLU after the batch norm, in the same pass as the sums where they are per plane */
        for (size_t i = 0; spatial == 1 && i < (size_t)batch * n; ++i) dy[i] = relu_out[i] > 0.0f ? dy[i] : 0.0f;
    if (spatial == 1) {
        for (int i = 0; i < batch; ++i) {
            const float *d = dy + (size_t)i * n, *h = xhat + (size_t)i * n;
            for (int j = 0; j < n; ++j) sdy[j] += d[j], sdyx[j] += d[j] * h[j];
        }
    } else {
        for (int j = 0; j < n; ++j) {
            double a = 0.0, b = 0.0;
            for (int i = 0; i < batch; ++i) {
                float *d = dy + ((size_t)i * n + j) * spatial;
                const float *h = xhat + ((size_t)i * n + j) * spatial;
                if (relu_out)
                    nd_plane_relu_sum_dot(d, h, relu_out + ((size_t)i * n + j) * spatial, (size_t)spatial, &a, &b);
                else nd_plane_sum_dot(d, h, (size_t)spatial, &a, &b);
            }
            sdy[j] = (float)a, sdyx[j] = (float)b;
        }
    }
    /* The parameter gradients are this rank's part; the trainer's
     * allreduce adds the rest. */
    for (int j = 0; j < n; ++j) dgamma[j] += sdyx[j], dbeta[j] += sdy[j];
    sums[2 * (size_t)n] = (float)batch * (float)spatial;
    if (reduce && reduce(ctx, sums, 2 * (size_t)n + 1) != 0) return -1;
    const float count = sums[2 * (size_t)n];
    /* dx = inv_std * gamma * (dy - mean(dy) - xhat * mean(dy * xhat)) */
    for (int j = 0; j < n; ++j) sdy[j] /= count, sdyx[j] /= count;
    for (int i = 0; i < batch; ++i) {
        float *d = dy + (size_t)i * n * spatial;
        const float *h = xhat + (size_t)i * n * spatial;
        if (spatial == 1)
            for (int j = 0; j < n; ++j) d[j] = gamma[j] * inv_std[j] * (d[j] - sdy[j] - h[j] * sdyx[j]);
        else
            for (int j = 0; j < n; ++j, d += spatial, h += spatial) {
                const float scale = gamma[j] * inv_std[j], mean_dy = sdy[j], mean_dyx = sdyx[j];
                for (int s = 0; s < spatial; ++s) d[s] = scale * (d[s] - mean_dy - h[s] * mean_dyx);
            }
    }
    return 0;
}
