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

/* Batch normalization (Ioffe & Szegedy 2015) of x (batch x n) in place, per
 * feature over the batch rows.
 *
 * Training: sums (2n+1) receives this batch's sum of x, sum of x^2 and the
 * row count. If reduce is not NULL it is called on sums to add every rank's
 * (--sync-bn), so the statistics are those of the global batch. Then x
 * becomes gamma * xhat + beta with xhat = (x - mean) / sqrt(var + eps)
 * (biased variance), xhat (batch x n) and inv_std (n) are kept for
 * backward. Returns non-zero if reduce failed. */
typedef int (*nd_reduce_fn)(void *ctx, float *buf, size_t n);
int nd_bn_forward_train(float *x, float *xhat, float *inv_std, float *sums, const float *gamma, const float *beta,
                        float eps, int batch, int n, nd_reduce_fn reduce, void *ctx);

/* Inference: x = gamma * (x - mean) / sqrt(var + eps) + beta with the
 * running statistics mean (n) and var (n). */
void nd_bn_forward_eval(float *x, const float *gamma, const float *beta, const float *mean, const float *var, float eps,
                        int batch, int n);

/* dy (batch x n): dL/d(output) on entry, dL/dx on return. dgamma, dbeta (n)
 * are accumulated into. sums (2n+1) is scratch; with reduce the two sums
 * over the batch are added across ranks and rows counts the global batch.
 * Returns non-zero if reduce failed. */
int nd_bn_backward(float *dy, float *dgamma, float *dbeta, float *sums, const float *xhat, const float *inv_std,
                   const float *gamma, int batch, int n, nd_reduce_fn reduce, void *ctx);

/* Inverted dropout of x (batch x n) into out, with mask (batch x n) set to
 * 0 or 1/(1-p): out = x * mask, so the expected activation is unchanged and
 * inference needs no rescaling. Row i's mask is a pure function of
 * (seed, stream, row_ids[i]) (row_ids NULL: i), so a resumed or
 * deterministic run draws the same masks whatever the rank count. */
void nd_dropout_forward(float *out, float *mask, const float *x, int batch, int n, float p, uint64_t seed,
                        uint64_t stream, const long *row_ids);

#endif
