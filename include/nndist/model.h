/* A multi-layer perceptron whose parameters and gradients are two flat,
 * aligned buffers; every layer holds spans into them.
 *
 * All activation workspaces are sized for `max_batch` rows at creation, so
 * forward and backward never allocate. */
#ifndef NNDIST_MODEL_H
#define NNDIST_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nndist/arena.h"
#include "nndist/layers.h"
#include "nndist/status.h"

#define ND_MAX_LAYERS 16

/* Floats past num_params in the gradient buffer, free for the trainer to
 * carry per-step scalars (loss sum, correct count) through the same
 * allreduce as the gradient. */
#define ND_GRAD_TAIL 16

typedef enum {
    ND_INIT_HE = 0,  /* normal, std gain / sqrt(fan_in), gain of the layer's activation:
                        sqrt(2) for ReLU (He et al. 2015), 1 for the linear output layer */
    ND_INIT_XAVIER,  /* uniform in +-sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010) */
    ND_INIT_LECUN,   /* uniform in +-1 / sqrt(fan_in) */
    ND_INIT_SMALL    /* normal, std 0.01 */
} nd_init_kind;

/* Parses "he", "xavier", "lecun", "small"; 0 or -1. */
int nd_init_parse(const char *name, nd_init_kind *kind);

typedef struct {
    int input_dim;
    int num_hidden;
    int hidden[ND_MAX_LAYERS - 1]; /* widths of the hidden layers */
    int num_classes;               /* width of the output layer */
    nd_activation act;             /* on every hidden layer; output is identity */
} nd_model_spec;

typedef struct {
    int in_dim, out_dim;
    nd_span w; /* (out_dim x in_dim) row-major */
    nd_span b; /* (out_dim) */
    nd_activation act;
} nd_dense_layer;

typedef struct {
    nd_model_spec spec;
    int num_layers;
    nd_dense_layer layer[ND_MAX_LAYERS];
    size_t num_params;    /* floats in param/grad, alignment padding included */
    size_t num_weights;   /* trainable values, padding excluded */
    int max_batch;
    int max_width;        /* widest layer input or output */
    float *param;         /* (num_params) */
    float *grad;          /* (num_params + ND_GRAD_TAIL) */
    float *out[ND_MAX_LAYERS]; /* out[l]: (max_batch x layer[l].out_dim), views */
    float *delta[2];      /* ping-pong gradients w.r.t. layer outputs (max_batch x max_width) */
    float *workspace;     /* owns out[] and delta[] */
} nd_model;

/* Sizes and allocates everything. On failure nothing needs freeing. */
nd_status nd_model_create(nd_model *model, const nd_model_spec *spec, int max_batch,
                          nd_error *err);
void nd_model_destroy(nd_model *model);

/* Weights drawn by `init` from a seeded stream per layer; biases zero. */
void nd_model_init_params(nd_model *model, uint64_t seed, nd_init_kind init);

/* Output-layer biases set to log class priors, so the initial softmax
 * predicts the training set's class frequencies. counts (num_classes). */
void nd_model_bias_priors(nd_model *model, const double *counts);

/* Runs x (batch x input_dim) through the network; returns the logits
 * (batch x num_classes), a view owned by the model. batch <= max_batch. */
const float *nd_model_forward(nd_model *model, const float *x, int batch);

/* Where the loss writes dL/dlogits (batch x num_classes) before backward. */
float *nd_model_output_grad(nd_model *model);

/* Accumulates dL/dparams into model->grad, reading dL/dlogits from
 * nd_model_output_grad(). x (batch x input_dim) must be the input of the
 * forward pass that precedes it. */
void nd_model_backward(nd_model *model, const float *x, int batch);

/* Sets grad (num_params + ND_GRAD_TAIL) to zero. */
void nd_model_zero_grad(nd_model *model);

#endif
