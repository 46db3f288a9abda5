/* Dense layer and element-wise activations over raw pointers.
 *
 * Weights are stored (out_dim x in_dim) row-major, as PyTorch's nn.Linear
 * does, so forward is out = in * W^T + b. Backward *accumulates* into the
 * weight and bias gradients (callers zero them once per step). */
#ifndef NNDIST_LAYERS_H
#define NNDIST_LAYERS_H

#include <stddef.h>

typedef enum {
    ND_ACT_IDENTITY = 0,
    ND_ACT_RELU,
    ND_ACT_LEAKY_RELU,
    ND_ACT_TANH,
    ND_ACT_SIGMOID
} nd_act_kind;

typedef struct {
    nd_act_kind kind;
    float alpha; /* negative slope of leaky ReLU (> 0) */
} nd_activation;

/* Parses "relu", "leaky_relu", "tanh", "sigmoid", "identity"; returns 0 on
 * success, -1 for an unknown name. */
int nd_activation_parse(const char *name, nd_act_kind *kind);
const char *nd_activation_name(nd_act_kind kind);

/* out (batch x out_dim) = act(in (batch x in_dim) * w^T + b).
 * w: (out_dim x in_dim), b: (out_dim). Bias and activation are fused in one
 * pass over out after the GEMM. */
void nd_dense_forward(float *out, const float *in, const float *w, const float *b,
                      nd_activation act, int batch, int in_dim, int out_dim);

/* Backward through act and the affine map.
 * dout (batch x out_dim): dL/d(out) on entry, overwritten with dL/d(pre-act).
 * out  (batch x out_dim): the forward output (activations are differentiated
 *                         from their output, so no pre-activation is kept).
 * in   (batch x in_dim), w (out_dim x in_dim).
 * dw (out_dim x in_dim) and db (out_dim) are accumulated into.
 * din (batch x in_dim) is overwritten; pass NULL for the first layer. */
void nd_dense_backward(float *din, float *dw, float *db, float *dout, const float *out,
                       const float *in, const float *w, nd_activation act, int batch,
                       int in_dim, int out_dim);

/* In-place activation of n values (exposed for tests and other layers). */
void nd_activation_forward(float *x, size_t n, nd_activation act);

/* dy (n) *= act'(.) evaluated from the activation output y (n). */
void nd_activation_backward(float *dy, const float *y, size_t n, nd_activation act);

#endif
