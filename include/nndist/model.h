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
    ND_INIT_HE = 0, /* normal, std gain / sqrt(fan_in), gain of the layer's activation:
                       sqrt(2) for ReLU (He et al. 2015), 1 for the linear output layer */
    ND_INIT_XAVIER, /* uniform in +-sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010) */
    ND_INIT_LECUN,  /* uniform in +-1 / sqrt(fan_in) */
    ND_INIT_SMALL   /* normal, std 0.01 */
} nd_init_kind;

/* Parses "he", "xavier", "lecun", "small"; 0 or -1. */
int nd_init_parse(const char *name, nd_init_kind *kind);
/* The names of the initializations, indexed by nd_init_kind, NULL-terminated. */
extern const char *const nd_init_names[];

/* One hidden layer: dense -> [batch norm] -> activation -> [dropout]. */
typedef struct {
    int width;         /* units out of the layer (maxout: the dense part has width * pieces) */
    nd_activation act; /* element-wise, or ND_ACT_MAXOUT */
    int pieces;        /* maxout: linear pieces per unit (>= 2); 1 otherwise */
    int batch_norm;    /* 1: normalize the dense output, learnable scale and shift */
    float drop;        /* dropout probability after the activation, in [0, 1) */
} nd_hidden_spec;

typedef struct {
    int input_dim;
    float input_drop; /* dropout probability on the input features */
    int num_hidden;
    nd_hidden_spec hidden[ND_MAX_LAYERS - 1];
    int num_classes; /* width of the output layer (dense, no activation) */
    float bn_eps;    /* batch norm: added to the variance (0 means 1e-5) */
} nd_model_spec;

/* The compact architecture text, e.g. "784:drop0.2-1024:bn:relu:drop0.3-512:relu-10":
 * groups separated by '-', the first the input (width, optional dropN),
 * the last the output (width only), each hidden group a width followed by
 * any of bn, an activation (relu, leaky_relu[A], elu[A], tanh, sigmoid,
 * maxoutK) and dropP (P the drop probability). A hidden group without an
 * activation uses default_act. Returns 0, or -1 with why filled. */
int nd_arch_parse(const char *text, nd_activation default_act, nd_model_spec *spec, char *why, size_t cap);

/* The canonical text of spec (what nd_arch_parse reads back to the same
 * spec); written into checkpoints and compared on resume. */
void nd_arch_format(const nd_model_spec *spec, char *out, size_t cap);

/* A plain MLP spec: widths (num_hidden) with one activation, no batch norm
 * or dropout. */
void nd_model_spec_plain(nd_model_spec *spec, int input_dim, const int *widths, int num_hidden, nd_activation act,
                         int num_classes);

typedef struct {
    int in_dim, out_dim; /* of the dense part: out_dim = width * pieces */
    int width;           /* units out of the layer */
    nd_span w;           /* (out_dim x in_dim) row-major */
    nd_span b;           /* (out_dim) */
    nd_activation act;   /* the output layer: identity */
    int pieces;
    int batch_norm;
    nd_span gamma, beta;       /* (out_dim) batch norm scale and shift (trainable) */
    nd_span run_mean, run_var; /* (out_dim) running statistics (in the statistics region) */
    float drop;
    int grad_rows; /* rows of the weight gradient per GEMM in backward (nd_model_set_grad_block) */
} nd_dense_layer;

/* grad[lo, end of the gradient buffer) is final: a bucket may be sent. */
typedef void (*nd_grad_ready_fn)(void *ctx, size_t lo);

/* A training forward pass: dropout masks and batch statistics. Inference
 * passes NULL instead. */
typedef struct {
    uint64_t seed;
    long step;           /* masks are drawn from (seed, step, layer, row_ids[i]) */
    const long *row_ids; /* (batch) global sample index of each row; NULL: 0..batch-1 */
    nd_reduce_fn reduce; /* --sync-bn: adds floats across ranks; NULL: each rank's own batch */
    void *reduce_ctx;
    /* Overlap of communication with backward: called each time grad[lo, ..)
     * has become final, lo falling layer by layer (and weight-row block by
     * block) from the top of the trainable prefix to 0; the regions after it
     * are final once forward is done. NULL: no calls. */
    nd_grad_ready_fn grad_ready;
    void *ready_ctx;
} nd_train_pass;

/* Floats of a weight gradient computed by one GEMM in backward (256 KiB):
 * small enough that a 784-512 layer's gradient leaves in 6 buckets while
 * the rest is computed; large enough that the blocks cost 2-8% of that one
 * GEMM on one or two threads (32K floats cost 14-16%; measured in one
 * sitting, 512x784x64). */
#define ND_GRAD_BLOCK_FLOATS 65536

typedef struct {
    nd_model_spec spec;
    int num_layers;
    nd_dense_layer layer[ND_MAX_LAYERS];
    size_t num_params;    /* floats in param/grad, alignment padding included */
    size_t num_trainable; /* param[0, num_trainable) is trained by the optimizer; the rest,
                             up to num_params, holds batch norm running statistics */
    size_t num_weights;   /* trainable values, padding excluded */
    int max_batch;
    int max_width; /* widest layer input or output */
    float *param;  /* (num_params) */
    float *grad;   /* (num_params + ND_GRAD_TAIL) */
    /* Workspace views, each (max_batch x the layer's width) unless noted. */
    float *z[ND_MAX_LAYERS];      /* dense output (out_dim); after batch norm and an element-wise
                                     activation in place, the activation output */
    float *xhat[ND_MAX_LAYERS];   /* batch norm: normalized dense output (out_dim) */
    float *bn_buf[ND_MAX_LAYERS]; /* batch norm: inv_std (out_dim), then sums (2 out_dim + 1) */
    float *act[ND_MAX_LAYERS];    /* activation output (width): z, or maxout's own buffer */
    float *drop_out[ND_MAX_LAYERS + 1], *drop_mask[ND_MAX_LAYERS + 1]; /* [0]: input, [l+1]: layer l */
    float *delta[2];  /* ping-pong gradients w.r.t. layer outputs (max_batch x max_width) */
    float *workspace; /* owns every view above */
    size_t workspace_floats;
    nd_train_pass pass; /* of the latest training forward (backward reuses it) */
    int pass_failed;    /* a reduce hook failed in the latest forward or backward */
    int trained;        /* the latest forward was a training pass */
} nd_model;

/* Sizes and allocates everything. On failure nothing needs freeing. */
nd_status nd_model_create(nd_model *model, const nd_model_spec *spec, int max_batch, nd_error *err);
void nd_model_destroy(nd_model *model);

/* Weights drawn by `init` from a seeded stream per layer; biases zero;
 * batch norm scale 1, shift 0, running mean 0 and variance 1. */
void nd_model_init_params(nd_model *model, uint64_t seed, nd_init_kind init);

/* Output-layer biases set to log class priors, so the initial softmax
 * predicts the training set's class frequencies. counts (num_classes). */
void nd_model_bias_priors(nd_model *model, const double *counts);

/* Runs x (batch x input_dim) through the network; returns the outputs
 * (batch x num_classes), a view owned by the model. batch <= max_batch.
 * pass NULL: inference (running statistics, no dropout). Otherwise a
 * training pass; it writes this batch's batch-norm sums (sum of x, of x^2)
 * into the statistics region of grad, so zero the gradient first. */
const float *nd_model_forward(nd_model *model, const float *x, int batch, const nd_train_pass *pass);

/* Where the loss writes dL/dlogits (batch x num_classes) before backward. */
float *nd_model_output_grad(nd_model *model);

/* Accumulates dL/dparams into model->grad, reading dL/dlogits from
 * nd_model_output_grad(). x (batch x input_dim) must be the input of the
 * training forward pass that precedes it. */
void nd_model_backward(nd_model *model, const float *x, int batch);

/* Backward computes each layer's weight gradient in blocks of rows of
 * about `floats` floats each (whole tiles of 16 rows once they are that
 * many), with or without the grad_ready hook, so that an overlapped and a
 * plain step issue the same GEMMs on the same blocks and give the same
 * bits on any BLAS kernel. nd_model_create sets ND_GRAD_BLOCK_FLOATS; tests
 * of the hook set smaller blocks. */
void nd_model_set_grad_block(nd_model *model, size_t floats);

/* Floating-point operations of the GEMMs of one training sample: forward
 * (2 in out per layer), the weight gradient (2 in out) and the input
 * gradient (2 in out, not for the first layer). Element-wise work is
 * left out: this is the count a compute-bound rate is measured against. */
double nd_model_train_flops_per_sample(const nd_model *model);

/* Sets grad (num_params + ND_GRAD_TAIL) to zero. */
void nd_model_zero_grad(nd_model *model);

/* The activation output of layer l (max_batch x layer[l].width) of the
 * latest forward pass, before dropout. */
const float *nd_model_activation(const nd_model *model, int l);

/* Turns the batch-norm sums in grad's statistics region, summed over
 * `rows` samples, into the change of the running statistics:
 * momentum * (batch statistic - running value), read against param (the
 * unbiased batch variance, as PyTorch). Needs the whole arena. */
void nd_model_running_deltas(const nd_model *model, const float *param, float *grad, double rows, float momentum);

/* Adds grad to param and zeroes grad over [lo, hi) of the arena clipped to
 * the statistics region: applies the deltas above on a replica, or on a
 * server's slice. */
void nd_model_apply_running(const nd_model *model, float *param, float *grad, size_t lo, size_t hi);

#endif
