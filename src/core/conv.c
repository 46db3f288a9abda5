/* 2-D convolution by im2col and one GEMM per sample, and the pooling
 * layers (layers.h). NCHW throughout, weights (out_c x c x k x k) as
 * PyTorch's nn.Conv2d, so a weight row is one filter over c k k inputs. */
#include <float.h>
#include <string.h>

#include "nndist/blas.h"
#include "nndist/layers.h"
#include "nndist/rng.h"
#include "plane_sums.h"

int nd_conv_geom_finish(nd_conv_geom *g) {
    if (g->kernel < 1 || g->stride < 1 || g->pad < 0 || g->h + 2 * g->pad < g->kernel || g->w + 2 * g->pad < g->kernel)
        return -1;
    g->out_h = (g->h + 2 * g->pad - g->kernel) / g->stride + 1;
    g->out_w = (g->w + 2 * g->pad - g->kernel) / g->stride + 1;
    return 0;
}

/* A 1x1 kernel at stride 1 without padding reads the input as it is. */
static int is_pointwise(const nd_conv_geom *g) { return g->kernel == 1 && g->stride == 1 && g->pad == 0; }

size_t nd_conv_col_floats(const nd_conv_geom *g) {
    return is_pointwise(g) ? 0 : (size_t)g->c * g->kernel * g->kernel * g->out_h * g->out_w;
}

/* The input gradient of a stride-1 convolution is itself a convolution:
 * of dout (out_c x out_h x out_w) with the weights flipped in space and
 * transposed in channels, padded by k - 1 - pad. As a GEMM on dout's
 * columns it writes dx at once, where the other way (the columns'
 * gradient, then col2im) adds every value k^2 times into a cleared dx. */
static int transposed_input_grad(const nd_conv_geom *g) {
    return g->stride == 1 && g->pad <= g->kernel - 1 && !is_pointwise(g);
}

static nd_conv_geom transposed_geom(const nd_conv_geom *g) {
    nd_conv_geom t = {.c = g->out_c,
                      .h = g->out_h,
                      .w = g->out_w,
                      .out_c = g->c,
                      .kernel = g->kernel,
                      .stride = 1,
                      .pad = g->kernel - 1 - g->pad};
    nd_conv_geom_finish(&t); /* out_h = h, out_w = w */
    return t;
}

/* The scratch of a convolution: for the transposed input gradient, the
 * flipped weights first, then room for either convolution's columns (the
 * weights must outlive the forward columns made again for dw). */
size_t nd_conv_scratch_floats(const nd_conv_geom *g) {
    size_t n = nd_conv_col_floats(g);
    if (transposed_input_grad(g)) {
        const nd_conv_geom t = transposed_geom(g);
        if (nd_conv_col_floats(&t) > n) n = nd_conv_col_floats(&t);
        n += (size_t)g->c * g->out_c * g->kernel * g->kernel;
    }
    return n;
}

/* col (c k k x out_h out_w) = the receptive field of every output pixel of
 * one sample x (c x h x w), zeros where the window covers padding. */
static void im2col(float *col, const float *x, const nd_conv_geom *g) {
    const int k = g->kernel, oh = g->out_h, ow = g->out_w;
    for (int c = 0; c < g->c; ++c)
        for (int ki = 0; ki < k; ++ki)
            for (int kj = 0; kj < k; ++kj) {
                float *row = col + (((size_t)c * k + ki) * k + kj) * oh * ow;
                if (g->stride == 1 && ow == g->w) {
                    /* "same" padding: the rows of input channel c that the window
                     * row ki covers, shifted by kj - pad, are one contiguous run
                     * of the plane: one long copy, then the values that wrapped
                     * around from the neighbouring row set to the padding's 0 */
                    const int shift = kj - g->pad, w = g->w;
                    const int ylo = g->pad - ki > 0 ? g->pad - ki : 0;
                    const int yhi = g->h + g->pad - ki < oh ? g->h + g->pad - ki : oh;
                    if (yhi <= ylo) {
                        memset(row, 0, sizeof(float) * oh * ow);
                        continue;
                    }
                    memset(row, 0, sizeof(float) * ylo * ow);
                    memset(row + (size_t)yhi * ow, 0, sizeof(float) * (size_t)(oh - yhi) * ow);
                    const float *plane = x + (size_t)c * g->h * w;
                    /* out[y][x] = plane[(y - pad + ki) w + x + shift] for y in [ylo, yhi):
                     * the run may start or end one shift outside the plane, where
                     * only zeros belong */
                    long from = (long)(ylo - g->pad + ki) * w + shift, n = (long)(yhi - ylo) * ow;
                    float *out = row + (size_t)ylo * ow;
                    long skip = from < 0 ? -from : 0, tail = from + n > (long)g->h * w ? from + n - (long)g->h * w : 0;
                    memcpy(out + skip, plane + from + skip, sizeof(float) * (size_t)(n - skip - tail));
                    /* the few wrapped columns, down the rows: a loop along a
                     * row would become one tiny memset call per row */
                    for (int q = 0; q < -shift; ++q)
                        for (int y = 0; y < yhi - ylo; ++y) out[(size_t)y * ow + q] = 0.0f;
                    for (int q = ow - shift; q < ow; ++q)
                        for (int y = 0; y < yhi - ylo; ++y) out[(size_t)y * ow + q] = 0.0f;
                    for (long q = 0; q < skip; ++q) out[q] = 0.0f;
                    for (long q = n - tail; q < n; ++q) out[q] = 0.0f;
                    continue;
                }
                if (g->stride == 1) {
                    /* each output row is the input row shifted by kj - pad, zeros
                     * at the ends; the bounds hold for every row */
                    const int shift = kj - g->pad, lo = shift < 0 ? -shift : 0;
                    const int hi = g->w - shift < ow ? g->w - shift : ow;
                    for (int y = 0; y < oh; ++y) {
                        const int iy = y - g->pad + ki;
                        float *out = row + (size_t)y * ow;
                        if (iy < 0 || iy >= g->h) {
                            memset(out, 0, sizeof(float) * ow);
                            continue;
                        }
                        const float *in = x + ((size_t)c * g->h + iy) * g->w;
                        for (int xo = 0; xo < lo; ++xo) out[xo] = 0.0f;
                        for (int xo = lo; xo < hi; ++xo) out[xo] = in[xo + shift];
                        for (int xo = hi > lo ? hi : lo; xo < ow; ++xo) out[xo] = 0.0f;
                    }
                    continue;
                }
                for (int y = 0; y < oh; ++y) {
                    const int iy = y * g->stride - g->pad + ki;
                    float *out = row + (size_t)y * ow;
                    if (iy < 0 || iy >= g->h) {
                        memset(out, 0, sizeof(float) * ow);
                        continue;
                    }
                    const float *in = x + ((size_t)c * g->h + iy) * g->w;
                    for (int xo = 0; xo < ow; ++xo) {
                        const int ix = xo * g->stride - g->pad + kj;
                        out[xo] = ix >= 0 && ix < g->w ? in[ix] : 0.0f;
                    }
                }
            }
}

void nd_col2im_add(float *dx, const float *col, const nd_conv_geom *g) {
    const int k = g->kernel, oh = g->out_h, ow = g->out_w;
    for (int c = 0; c < g->c; ++c)
        for (int ki = 0; ki < k; ++ki)
            for (int kj = 0; kj < k; ++kj) {
                const float *row = col + (((size_t)c * k + ki) * k + kj) * oh * ow;
                /* the output columns whose input column lies inside the image */
                int lo = 0, hi = ow;
                if (g->stride == 1) {
                    lo = g->pad - kj > 0 ? g->pad - kj : 0;
                    hi = g->w + g->pad - kj < ow ? g->w + g->pad - kj : ow;
                }
                for (int y = 0; y < oh; ++y) {
                    const int iy = y * g->stride - g->pad + ki;
                    if (iy < 0 || iy >= g->h) continue;
                    float *out = dx + ((size_t)c * g->h + iy) * g->w;
                    const float *in = row + (size_t)y * ow;
                    if (g->stride == 1) { /* a shifted, contiguous add */
                        const int shift = kj - g->pad;
                        for (int xo = lo; xo < hi; ++xo) out[xo + shift] += in[xo];
                        continue;
                    }
                    for (int xo = 0; xo < ow; ++xo) {
                        const int ix = xo * g->stride - g->pad + kj;
                        if (ix >= 0 && ix < g->w) out[ix] += in[xo];
                    }
                }
            }
}

void nd_conv_forward(float *out, const float *x, const float *w, const float *b, nd_activation act, float *col,
                     const nd_conv_geom *g, int batch) {
    const int ckk = g->c * g->kernel * g->kernel, spatial = g->out_h * g->out_w;
    const size_t in_len = (size_t)g->c * g->h * g->w, out_len = (size_t)g->out_c * spatial;
    const size_t col_len = nd_conv_col_floats(g);
    for (int i = 0; i < batch; ++i) {
        const float *xi = x + i * in_len;
        float *oi = out + i * out_len;
        const float *src = xi; /* the GEMM's columns: the input itself for a pointwise conv */
        if (col_len) {
            im2col(col, xi, g);
            src = col;
        }
        /* out_i (out_c x spatial) = b + w (out_c x ckk) * col (ckk x spatial):
         * the bias first, so the GEMM adds onto it (beta 1) and skips its
         * own pass that clears the output */
        for (int o = 0; o < g->out_c; ++o) {
            float *row = oi + (size_t)o * spatial;
            for (int s = 0; s < spatial; ++s) row[s] = b[o];
        }
        nd_sgemm(false, false, g->out_c, spatial, ckk, 1.0f, w, ckk, src, spatial, 1.0f, oi, spatial);
        nd_activation_forward(oi, out_len, act);
    }
}

void nd_conv_backward_bias(float *dout, const float *out, float *db, nd_activation act, const nd_conv_geom *g,
                           int batch) {
    const int spatial = g->out_h * g->out_w;
    const size_t n = (size_t)batch * g->out_c * spatial;
    nd_activation_backward(dout, out, n, act);
    for (int o = 0; o < g->out_c; ++o) { /* per channel in double, in a fixed order */
        double sum = 0.0;
        for (int i = 0; i < batch; ++i)
            sum += nd_plane_sum(dout + ((size_t)i * g->out_c + o) * spatial, (size_t)spatial);
        db[o] += (float)sum;
    }
}

void nd_conv_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, float *scratch,
                      const nd_conv_geom *g, int batch) {
    const int k = g->kernel, ckk = g->c * k * k, spatial = g->out_h * g->out_w;
    const size_t in_len = (size_t)g->c * g->h * g->w, out_len = (size_t)g->out_c * spatial;
    const size_t col_len = nd_conv_col_floats(g);
    const int transposed = dx && transposed_input_grad(g);
    const nd_conv_geom t = transposed ? transposed_geom(g) : *g;
    const int okk = g->out_c * k * k;
    float *wt = scratch; /* (c x out_c k k) when transposed, before the columns */
    float *cols = transposed ? scratch + (size_t)g->c * okk : scratch;
    if (transposed) /* wt[c][o][ki][kj] = w[o][c][k-1-ki][k-1-kj] */
        for (int o = 0; o < g->out_c; ++o)
            for (int c = 0; c < g->c; ++c)
                for (int q = 0; q < k * k; ++q)
                    wt[((size_t)c * g->out_c + o) * k * k + q] = w[((size_t)o * g->c + c) * k * k + (k * k - 1 - q)];
    for (int i = 0; i < batch; ++i) {
        const float *di = dout + i * out_len;
        const float *col = x + i * in_len;
        if (col_len) {
            im2col(cols, col, g);
            col = cols;
        }
        /* dw (out_c x ckk) += d_i (out_c x spatial) * col^T (spatial x ckk) */
        nd_sgemm(false, true, g->out_c, ckk, spatial, 1.0f, di, spatial, col, spatial, 1.0f, dw, ckk);
        if (!dx) continue;
        float *dxi = dx + i * in_len;
        if (transposed) { /* dx_i (c x h w) = wt (c x okk) * im2col'(d_i) (okk x h w) */
            im2col(cols, di, &t);
            nd_sgemm(false, false, g->c, g->h * g->w, okk, 1.0f, wt, okk, cols, g->h * g->w, 0.0f, dxi, g->h * g->w);
        } else if (!col_len) { /* pointwise: dx_i = w^T (c x out_c) * d_i */
            nd_sgemm(true, false, ckk, spatial, g->out_c, 1.0f, w, ckk, di, spatial, 0.0f, dxi, spatial);
        } else { /* dcol (ckk x spatial) = w^T (ckk x out_c) * d_i (out_c x spatial), scattered back */
            nd_sgemm(true, false, ckk, spatial, g->out_c, 1.0f, w, ckk, di, spatial, 0.0f, cols, spatial);
            memset(dxi, 0, sizeof(float) * in_len);
            nd_col2im_add(dxi, cols, g);
        }
    }
}

/* Offset in a plane of the arg-max of the window at (y, xo), the first in
 * row-major order on ties. */
static size_t window_argmax(const float *plane, const nd_conv_geom *g, int y, int xo) {
    size_t best = (size_t)y * g->stride * g->w + (size_t)xo * g->stride;
    for (int ki = 0; ki < g->kernel; ++ki)
        for (int kj = 0; kj < g->kernel; ++kj) {
            const size_t at = ((size_t)y * g->stride + ki) * g->w + (size_t)xo * g->stride + kj;
            if (plane[at] > plane[best]) best = at;
        }
    return best;
}

void nd_maxpool_forward(float *out, int *arg, const float *x, const nd_conv_geom *g, int batch) {
    const size_t planes = (size_t)batch * g->c, in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->out_h * g->out_w;
    if (g->kernel == 2 && g->stride == 2) { /* the common window, branch-free so that it vectorizes */
        const int oh = g->out_h, ow = g->out_w, w = g->w;
        for (size_t p = 0; p < planes; ++p) {
            const float *xp = x + p * in_plane;
            float *restrict op = out + p * out_plane;
            int *restrict ap = arg ? arg + p * out_plane : NULL;
            for (int y = 0; y < oh; ++y) {
                const float *r0 = xp + (size_t)2 * y * w, *r1 = r0 + w;
                float *restrict orow = op + (size_t)y * ow;
                for (int xo = 0; xo < ow; ++xo) { /* the first in row-major order wins a tie */
                    const float a = r0[2 * xo], b = r0[2 * xo + 1], c = r1[2 * xo], d = r1[2 * xo + 1];
                    const float ab = b > a ? b : a, cd = d > c ? d : c;
                    orow[xo] = cd > ab ? cd : ab;
                }
                if (!ap) continue;
                int *restrict arow = ap + (size_t)y * ow;
                for (int xo = 0; xo < ow; ++xo) {
                    const float a = r0[2 * xo], b = r0[2 * xo + 1], c = r1[2 * xo], d = r1[2 * xo + 1];
                    const float ab = b > a ? b : a, cd = d > c ? d : c;
                    const int iab = b > a, icd = w + (d > c), low = cd > ab;
                    arow[xo] = 2 * y * w + 2 * xo + iab + low * (icd - iab);
                }
            }
        }
        return;
    }
    for (size_t p = 0; p < planes; ++p) {
        const float *xp = x + p * in_plane;
        float *op = out + p * out_plane;
        for (int y = 0; y < g->out_h; ++y)
            for (int xo = 0; xo < g->out_w; ++xo) {
                const size_t at = window_argmax(xp, g, y, xo);
                op[y * g->out_w + xo] = xp[at];
                if (arg) arg[p * out_plane + (size_t)y * g->out_w + xo] = (int)at;
            }
    }
}

void nd_maxpool_backward(float *dx, const float *dout, const int *arg, const nd_conv_geom *g, int batch) {
    const size_t planes = (size_t)batch * g->c, in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->out_h * g->out_w;
    memset(dx, 0, sizeof(float) * planes * in_plane);
    for (size_t p = 0; p < planes; ++p) {
        const float *dp = dout + p * out_plane;
        const int *ap = arg + p * out_plane;
        float *dxp = dx + p * in_plane;
        for (size_t o = 0; o < out_plane; ++o) dxp[ap[o]] += dp[o];
    }
}

void nd_avgpool_forward(float *out, const float *x, const nd_conv_geom *g, int batch) {
    const size_t planes = (size_t)batch * g->c, in_plane = (size_t)g->h * g->w;
    const float inv = 1.0f / (float)(g->kernel * g->kernel);
    for (size_t p = 0; p < planes; ++p) {
        const float *xp = x + p * in_plane;
        float *op = out + p * g->out_h * g->out_w;
        for (int y = 0; y < g->out_h; ++y)
            for (int xo = 0; xo < g->out_w; ++xo) {
                float sum = 0.0f;
                for (int ki = 0; ki < g->kernel; ++ki)
                    for (int kj = 0; kj < g->kernel; ++kj)
                        sum += xp[((size_t)y * g->stride + ki) * g->w + (size_t)xo * g->stride + kj];
                op[y * g->out_w + xo] = sum * inv;
            }
    }
}

void nd_avgpool_backward(float *dx, const float *dout, const nd_conv_geom *g, int batch) {
    const size_t planes = (size_t)batch * g->c, in_plane = (size_t)g->h * g->w;
    const float inv = 1.0f / (float)(g->kernel * g->kernel);
    memset(dx, 0, sizeof(float) * planes * in_plane);
    for (size_t p = 0; p < planes; ++p) {
        const float *dp = dout + p * g->out_h * g->out_w;
        float *dxp = dx + p * in_plane;
        for (int y = 0; y < g->out_h; ++y)
            for (int xo = 0; xo < g->out_w; ++xo) {
                const float share = dp[y * g->out_w + xo] * inv;
                for (int ki = 0; ki < g->kernel; ++ki)
                    for (int kj = 0; kj < g->kernel; ++kj)
                        dxp[((size_t)y * g->stride + ki) * g->w + (size_t)xo * g->stride + kj] += share;
            }
    }
}

void nd_global_avgpool_forward(float *out, const float *x, int batch, int c, int spatial) {
    for (size_t p = 0; p < (size_t)batch * c; ++p) {
        out[p] = (float)(nd_plane_sum(x + p * spatial, (size_t)spatial) / spatial);
    }
}

void nd_global_avgpool_backward(float *dx, const float *dout, int batch, int c, int spatial) {
    const float inv = 1.0f / (float)spatial;
    for (size_t p = 0; p < (size_t)batch * c; ++p) {
        const float share = dout[p] * inv;
        for (int s = 0; s < spatial; ++s) dx[p * spatial + s] = share;
    }
}

void nd_dropout_channels_forward(float *out, float *mask, const float *x, int batch, int c, int spatial, float p,
                                 uint64_t seed, uint64_t stream, const long *row_ids) {
    const float scale = 1.0f / (1.0f - p);
    const uint64_t cut = (uint64_t)((double)p * 9007199254740992.0); /* as nd_dropout_forward */
    for (int i = 0; i < batch; ++i) {
        nd_rng rng;
        nd_rng_seed(&rng, seed, stream, (uint64_t)(row_ids ? row_ids[i] : i));
        for (int ch = 0; ch < c; ++ch) {
            const float m = (nd_rng_next(&rng) >> 11) >= cut ? scale : 0.0f;
            const size_t at = ((size_t)i * c + ch) * spatial;
            for (int s = 0; s < spatial; ++s) {
                mask[at + s] = m;
                out[at + s] = x[at + s] * m;
            }
        }
    }
}
