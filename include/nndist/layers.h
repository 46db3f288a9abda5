/* Dense layer and element-wise activations over raw pointers.
 *
 * Weights are stored (out_dim x in_dim) row-major, as PyTorch's nn.Linear
 * does, so forward is out = in * W^T + b. Backward *accumulates* into the
 * weight and bias gradients (callers zero them once per step). */
#ifndef NNDIST_LAYERS_H
#define NNDIST_LAYERS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ND_ACT_IDENTITY = 0,
    ND_ACT_RELU,
    ND_ACT_LEAKY_RELU,
    ND_ACT_TANH,
    ND_ACT_SIGMOID,
    ND_ACT_ELU,   /* x > 0 ? x : alpha (e^x - 1) (Clevert et al. 2016) */
    ND_ACT_MAXOUT /* max over `pieces` linear units (Goodfellow et al. 2013); not element-wise */
} nd_act_kind;

typedef struct {
    nd_act_kind kind;
    float alpha; /* negative slope of leaky ReLU (> 0); ELU's saturation value (> 0) */
} nd_activation;

/* Parses "relu", "leaky_relu", "tanh", "sigmoid", "elu", "maxout",
 * "identity"; returns 0 on success, -1 for an unknown name. */
int nd_activation_parse(const char *name, nd_act_kind *kind);
/* The names of the activations, indexed by nd_act_kind, NULL-terminated. */
extern const char *const nd_act_names[];
const char *nd_activation_name(nd_act_kind kind);

/* out (batch x out_dim) = act(in (batch x in_dim) * w^T + b).
 * w: (out_dim x in_dim), b: (out_dim). Bias and activation are fused in one
 * pass over out after the GEMM. */
void nd_dense_forward(float *out, const float *in, const float *w, const float *b, nd_activation act, int batch,
                      int in_dim, int out_dim);

/* Backward through act and the affine map.
 * dout (batch x out_dim): dL/d(out) on entry, overwritten with dL/d(pre-act).
 * out  (batch x out_dim): the forward output (activations are differentiated
 *                         from their output, so no pre-activation is kept).
 * in   (batch x in_dim), w (out_dim x in_dim).
 * dw (out_dim x in_dim) and db (out_dim) are accumulated into.
 * din (batch x in_dim) is overwritten; pass NULL for the first layer. */
void nd_dense_backward(float *din, float *dw, float *db, float *dout, const float *out, const float *in, const float *w,
                       nd_activation act, int batch, int in_dim, int out_dim);

/* nd_dense_backward in three steps, so a caller can hand finished gradient
 * rows to the network while the rest is still computed (overlap):
 *   _bias:    dout (batch x out_dim) *= act'(out); db (out_dim) += its column sums.
 *   _weights: rows [r0, r1) of dw (out_dim x in_dim) += dout[:, r0:r1]^T * in.
 *   _input:   din (batch x in_dim) = dout * w. */
void nd_dense_backward_bias(float *dout, const float *out, float *db, nd_activation act, int batch, int out_dim);
void nd_dense_backward_weights(float *dw, const float *dout, const float *in, int batch, int in_dim, int out_dim,
                               int r0, int r1);
void nd_dense_backward_input(float *din, const float *dout, const float *w, int batch, int in_dim, int out_dim);

/* In-place activation of n values (exposed for tests and other layers). */
void nd_activation_forward(float *x, size_t n, nd_activation act);

/* dy (n) *= act'(.) evaluated from the activation output y (n). */
void nd_activation_backward(float *dy, const float *y, size_t n, nd_activation act);

/* Maxout: out (batch x width) = max over the `pieces` adjacent values of
 * in (batch x width*pieces): unit j reads in[., j*pieces .. j*pieces+pieces-1]. */
void nd_maxout_forward(float *out, const float *in, int batch, int width, int pieces);

/* din (batch x width*pieces) = dout routed to the arg-max piece (the first
 * one on ties), 0 elsewhere. in is the forward input. */
void nd_maxout_backward(float *din, const float *dout, const float *in, int batch, int width, int pieces);

/* Batch normalization (Ioffe & Szegedy 2015) of x (batch x n x spatial)
 * in place, per feature j over the batch rows and, for a convolution's
 * channels, over the spatial positions as well (spatial 1: dense features).
 *
 * Training: sums (2n+1) receives this batch's sum of x, sum of x^2 and the
 * count of values per feature (batch x spatial). If reduce is not NULL it is called on sums to add every rank's
 * (--sync-bn), so the statistics are those of the global batch. Then x
 * becomes gamma * xhat + beta with xhat = (x - mean) / sqrt(var + eps)
 * (biased variance), xhat (batch x n x spatial) and inv_std (n) are kept for
 * backward; relu: then max(0, .), in the same pass. Returns non-zero if
 * reduce failed. */
typedef int (*nd_reduce_fn)(void *ctx, float *buf, size_t n);
int nd_bn_forward_train(float *x, float *xhat, float *inv_std, float *sums, const float *gamma, const float *beta,
                        float eps, int batch, int n, int spatial, int relu, nd_reduce_fn reduce, void *ctx);

/* Inference: x = gamma * (x - mean) / sqrt(var + eps) + beta with the
 * running statistics mean (n) and var (n). */
void nd_bn_forward_eval(float *x, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                        int batch, int n, int spatial);

/* dy (batch x n x spatial): dL/d(output) on entry, dL/dx on return. dgamma, dbeta (n)
 * are accumulated into. sums (2n+1) is scratch; with reduce the two sums
 * over the batch are added across ranks and the count covers the global batch.
 * relu_out (batch x n x spatial, the output of a ReLU after this batch norm)
 * or NULL: dy first becomes 0 where it is 0. Returns non-zero if reduce
 * failed. */
int nd_bn_backward(float *dy, float *dgamma, float *dbeta, float *sums, const float *xhat, const float *inv_std,
                   const float *gamma, const float *relu_out, int batch, int n, int spatial, nd_reduce_fn reduce,
                   void *ctx);

/* Inverted dropout of x (batch x n) into out, with mask (batch x n) set to
 * 0 or 1/(1-p): out = x * mask, so the expected activation is unchanged and
 * inference needs no rescaling. Row i's mask is a pure function of
 * (seed, stream, row_ids[i]) (row_ids NULL: i), so a resumed or
 * deterministic run draws the same masks whatever the rank count. */
void nd_dropout_forward(float *out, float *mask, const float *x, int batch, int n, float p, uint64_t seed,
                        uint64_t stream, const long *row_ids);

/* The geometry of a 2-D convolution or pooling window over one sample,
 * NCHW: an input of c x h x w, a square kernel with stride and zero
 * padding, an output of out_c x out_h x out_w where
 * out_h = (h + 2 pad - kernel) / stride + 1 (and the same for w). */
typedef struct {
    int c, h, w;
    int out_c, out_h, out_w;
    int kernel, stride, pad;
} nd_conv_geom;

/* Fills out_h and out_w from the rest; returns -1 if the kernel does not
 * fit the padded input. */
int nd_conv_geom_finish(nd_conv_geom *g);

/* Floats of the column buffer a convolution needs: (c kernel^2) x (out_h out_w). */
size_t nd_conv_col_floats(const nd_conv_geom *g);

/* Floats of the scratch nd_conv_forward and nd_conv_backward take: the
 * columns of one sample, and for a stride-1 input gradient the flipped
 * weights beside room for its own columns. */
size_t nd_conv_scratch_floats(const nd_conv_geom *g);

/* dx (c x h x w) += col (c k k x out_h out_w) scattered back: the adjoint of
 * im2col (the receptive field of every output pixel, zeros in the padding). */
void nd_col2im_add(float *dx, const float *col, const nd_conv_geom *g);

/* out (batch x out_c x out_h x out_w) = act(conv(x (batch x c x h x w), w) + b)
 * with w (out_c x c x k x k), b (out_c); col is scratch of
 * nd_conv_scratch_floats(g). One GEMM per sample through the BLAS wrapper. */
void nd_conv_forward(float *out, const float *x, const float *w, const float *b, nd_activation act, float *col,
                     const nd_conv_geom *g, int batch);

/* dout (batch x out_c x out_h x out_w): dL/d(out) on entry, dL/d(pre-act)
 * on return (act' from the forward output `out`); db (out_c) += its sums
 * over samples and pixels. */
void nd_conv_backward_bias(float *dout, const float *out, float *db, nd_activation act, const nd_conv_geom *g,
                           int batch);

/* dw (out_c x c k k) += sum over samples of dout_i * im2col(x_i)^T; then,
 * if dx is not NULL, dx (batch x c x h x w) = the input gradient: at
 * stride 1 as the convolution of dout with the flipped, transposed
 * weights (one GEMM into dx), otherwise the columns' gradient scattered
 * back by col2im. col is scratch of nd_conv_scratch_floats(g); the columns
 * are made again rather than kept from forward, which measured no faster
 * (a batch's columns do not stay in the caches, one sample's do) and would
 * cost ~100 MB at batch 64. The samples are added in order, so the result
 * does not depend on anything but the batch. */
void nd_conv_backward(float *dx, float *dw, const float *dout, const float *x, const float *w, float *col,
                      const nd_conv_geom *g, int batch);

/* Max pooling (no padding): out (batch x c x out_h x out_w) = the largest
 * value of each window of x (batch x c x h x w), the first in row-major
 * order on ties; arg (like out, or NULL) receives its offset in its plane. */
void nd_maxpool_forward(float *out, int *arg, const float *x, const nd_conv_geom *g, int batch);

/* dx (batch x c x h x w) = dout routed to each window's arg-max (arg from
 * the forward pass), summed where windows overlap. */
void nd_maxpool_backward(float *dx, const float *dout, const int *arg, const nd_conv_geom *g, int batch);

/* Average pooling (no padding, every window of kernel^2 values); a global
 * average pool is the window of the whole image (kernel = h = w). */
void nd_avgpool_forward(float *out, const float *x, const nd_conv_geom *g, int batch);
void nd_avgpool_backward(float *dx, const float *dout, const nd_conv_geom *g, int batch);

/* Global average pooling of x (batch x c x spatial) into out (batch x c). */
void nd_global_avgpool_forward(float *out, const float *x, int batch, int c, int spatial);
void nd_global_avgpool_backward(float *dx, const float *dout, int batch, int c, int spatial);

/* DropConnect (Wan et al. 2013) of a weight matrix w (rows x cols): one
 * mask for the whole batch, so masked = w * mask with mask (rows x cols)
 * 1/(1-p) where a weight is kept and 0 where it is dropped (inference
 * uses w itself). Row r draws from (seed, stream, r): a pure function of
 * them, whatever rank or thread draws it. */
void nd_dropconnect_forward(float *masked, float *mask, const float *w, int rows, int cols, float p, uint64_t seed,
                            uint64_t stream);

/* Channel-wise dropout (Tompson et al. 2015, PyTorch's Dropout2d): one
 * draw per (sample, channel) zeroes or scales all `spatial` values of that
 * channel. mask (batch x c x spatial) as nd_dropout_forward's. */
void nd_dropout_channels_forward(float *out, float *mask, const float *x, int batch, int c, int spatial, float p,
                                 uint64_t seed, uint64_t stream, const long *row_ids);

#endif
