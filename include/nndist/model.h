/* A feed-forward network (dense, convolution and pooling layers, residual
 * blocks) whose parameters and gradients are two flat, aligned buffers;
 * every layer holds spans into them, and a table of named tensors (the
 * checkpoint's arrays) views the same spans.
 *
 * All activation workspaces are sized for `max_batch` rows at creation, so
 * forward and backward never allocate. Activations are NCHW: a sample of a
 * convolutional layer is out_c planes of out_h x out_w, which is also the
 * flat row a dense layer after it reads (nn.Flatten's order). */
#ifndef NNDIST_MODEL_H
#define NNDIST_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nndist/arena.h"
#include "nndist/layers.h"
#include "nndist/status.h"

#define ND_MAX_LAYERS 32
/* Named arrays of a model: W, b, four batch-norm arrays and six of a projection per layer. */
#define ND_MAX_TENSORS (12 * ND_MAX_LAYERS)

/* Floats past num_params in the gradient buffer, free for the trainer to
 * carry per-step scalars (loss sum, correct count) through the same
 * allreduce as the gradient. */
#define ND_GRAD_TAIL 16

typedef enum {
    ND_INIT_HE = 0, /* normal, std gain / sqrt(fan_in), gain of the layer's activation:
                       sqrt(2) for ReLU (He et al. 2015), 1 for the linear output layer */
    ND_INIT_XAVIER, /* uniform in +-sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010) */
    ND_INIT_LECUN,  /* uniform in +-1 / sqrt(fan_in) */
    ND_INIT_SMALL,  /* normal, std 0.01 */
    ND_INIT_ZERO    /* every weight 0: for a model without hidden layers (softmax regression), whose
                       optimum it does not bias; hidden units would stay alike */
} nd_init_kind;

/* Parses "he", "xavier", "lecun", "small", "zero"; 0 or -1. */
int nd_init_parse(const char *name, nd_init_kind *kind);
/* The names of the initializations, indexed by nd_init_kind, NULL-terminated. */
extern const char *const nd_init_names[];

typedef enum {
    ND_LAYER_DENSE = 0,  /* out = in W^T + b */
    ND_LAYER_CONV,       /* 2-D convolution, square kernel, stride, zero padding */
    ND_LAYER_MAXPOOL,    /* max over kernel x kernel windows, stride (default the kernel) */
    ND_LAYER_AVGPOOL,    /* average over the windows */
    ND_LAYER_GLOBAL_POOL /* average over each channel's whole plane: c x 1 x 1 */
} nd_layer_kind;

/* One hidden layer (a group of the architecture text): the linear part
 * (dense, convolution or pooling) -> [batch norm] -> activation ->
 * [residual add -> activation] -> [dropout]. */
typedef struct {
    nd_layer_kind kind;
    int width;          /* dense: units out (maxout: the dense part has width * pieces);
                           conv: output channels; pooling: 0 (the channels pass through) */
    int kernel;         /* conv and pooling: square kernel side */
    int stride;         /* conv: 1 by default; pooling: the kernel by default */
    int pad;            /* conv: zero padding on every side */
    nd_activation act;  /* element-wise, or ND_ACT_MAXOUT (dense only); pooling: identity */
    int pieces;         /* maxout: linear pieces per unit (>= 2); 1 otherwise */
    int batch_norm;     /* 1: normalize the linear output (per feature, or per channel over
                           samples and pixels), learnable scale and shift */
    float drop;         /* dropout probability after the activation, in [0, 1) */
    int drop_channels;  /* 1: dropout zeroes whole channels (conv and pooling layers) */
    float drop_connect; /* DropConnect: probability of dropping each weight of a dense layer in
                           training, one mask per step (0: off) */
    int res_begin;      /* a residual block starts at this layer's input */
    int res_end;        /* the block ends here: its input (through a 1x1 projection when the
                           shape changes) is added to this layer's activation, then res_act */
    nd_activation res_act;
} nd_hidden_spec;

/* A sample's shape: c planes of h x w (c = 0: flat features, no image). */
typedef struct {
    int c, h, w;
} nd_image_shape;

typedef struct {
    int input_dim;        /* features per sample (c h w for an image) */
    nd_image_shape image; /* the input's image shape, or all 0 for flat features */
    float input_drop;     /* dropout probability on the input features */
    int num_hidden;
    nd_hidden_spec hidden[ND_MAX_LAYERS - 1];
    int num_classes; /* width of the output layer (dense, no activation) */
    float bn_eps;    /* batch norm: added to the variance (0 means 1e-5) */
} nd_model_spec;

/* The compact architecture text (docs/architecture.md), e.g.
 * "784:drop0.2-1024:bn:relu:drop0.3-512:relu-10" or
 * "1x28x28-c32k3p1:bn:relu-mp2-res(c32k3p1:bn:relu-c32k3p1:bn):relu-gap-10":
 * groups separated by '-', the first the input (a width, or CxHxW, with an
 * optional dropN), the last the output (width only). A hidden group is a
 * dense width (or fcN), a convolution cOkK[sS][pP], a pooling mpK[sS],
 * apK[sS] or gap, followed by any of bn, an activation (relu,
 * leaky_relu[A], elu[A], tanh, sigmoid, identity, maxoutK), dropP or
 * cdropP (whole channels). res( ... ) wraps groups into a residual block,
 * whose activation after the add follows the ')'. A group without an
 * activation uses default_act, except pooling (none) and the last group
 * of a residual block (identity: its activation is the one after ')').
 * Only the syntax is checked here; nd_model_create checks the shapes.
 * Returns 0, or -1 with why filled. */
int nd_arch_parse(const char *text, nd_activation default_act, nd_model_spec *spec, char *why, size_t cap);

/* 1 if the spec has a convolution or pooling layer: activations of whole
 * images per sample, so workspaces are sized for the training batch. */
int nd_spec_is_convolutional(const nd_model_spec *spec);

/* The leading token of one hidden group ("512", "c32k3p1", "mp2", "gap"):
 * how error messages name a layer. */
void nd_arch_group_text(const nd_hidden_spec *h, char *out, size_t cap);

/* The canonical text of spec (what nd_arch_parse reads back to the same
 * spec); written into checkpoints and compared on resume. */
void nd_arch_format(const nd_model_spec *spec, char *out, size_t cap);

/* A plain MLP spec: widths (num_hidden) with one activation, no batch norm
 * or dropout. */
void nd_model_spec_plain(nd_model_spec *spec, int input_dim, const int *widths, int num_hidden, nd_activation act,
                         int num_classes);

/* A batch normalization over `channels` features, each over `spatial`
 * values per sample (1 after a dense layer). channels 0: none. */
typedef struct {
    int channels, spatial;
    nd_span gamma, beta;       /* (channels) scale and shift (trainable) */
    nd_span run_mean, run_var; /* (channels) running statistics (in the statistics region) */
} nd_bn_site;

typedef struct {
    nd_layer_kind kind;
    int in_dim, out_dim;                /* per sample, of the linear part: out_dim = width * pieces (dense),
                                           out_c out_h out_w (conv and pooling) */
    int width;                          /* values per sample out of the layer (out_dim but for maxout) */
    nd_image_shape in_shape, out_shape; /* conv and pooling (and anything after them) */
    nd_conv_geom geom;                  /* conv and pooling */
    nd_span w;         /* dense (out_dim x in_dim), conv (out_c x c x k x k) row-major; pooling: empty */
    nd_span b;         /* (out_dim) dense, (out_c) conv */
    nd_activation act; /* the output layer and pooling: identity */
    int pieces;
    int batch_norm;
    nd_bn_site bn;
    float drop;
    int drop_channels;
    float drop_connect;
    int res_from;           /* res_end: the layer whose input is the block's input; -1: none */
    nd_activation res_act;  /* res_end: after the add */
    int proj;               /* res_end: 1 if the skip path is a 1x1 projection */
    nd_conv_geom proj_geom; /* its geometry (stride as needed to match the body's output) */
    nd_span proj_w, proj_b; /* (out_c x in_c), (out_c) */
    nd_bn_site proj_bn;     /* when the block's last layer has batch norm */
    int grad_rows;          /* rows of the weight gradient per GEMM in backward (nd_model_set_grad_block);
                               0 for a layer without weights */
    int fan_in;             /* inputs per output unit: in_dim (dense), c k k (conv) */
} nd_layer;

/* What a named array of the model holds. */
typedef enum {
    ND_TENSOR_WEIGHT,
    ND_TENSOR_BIAS,
    ND_TENSOR_BN_SCALE,
    ND_TENSOR_BN_SHIFT,
    ND_TENSOR_BN_MEAN,
    ND_TENSOR_BN_VAR
} nd_tensor_role;

/* A named view of the arena: "dense3/W", "conv0/b", "bn1/running_var",
 * "proj5/W", "projbn5/gamma". The checkpoint stores each under this name,
 * with these dimensions (PyTorch's order: nn.Linear's (out, in),
 * nn.Conv2d's (out, in, kh, kw)). */
typedef struct {
    char name[32];
    nd_span span;
    int ndims;
    int dims[4];
    nd_tensor_role role;
    int layer; /* the layer it belongs to */
} nd_tensor;

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
    nd_layer layer[ND_MAX_LAYERS];
    int num_tensors;
    nd_tensor tensor[ND_MAX_TENSORS]; /* layer by layer: W, b, the batch norm's four arrays, the projection's */
    size_t num_params;                /* floats in param/grad, alignment padding included */
    size_t num_trainable;             /* param[0, num_trainable) is trained by the optimizer; the rest,
                                         up to num_params, holds batch norm running statistics */
    size_t num_weights;               /* trainable values, padding excluded */
    int frozen_layers;                /* layers [0, frozen_layers) are frozen (nd_model_freeze) */
    size_t frozen_end;                /* param[0, frozen_end) is theirs: trained by no one */
    int max_batch;
    int max_width; /* widest layer input or output */
    float *param;  /* (num_params) */
    float *grad;   /* (num_params + ND_GRAD_TAIL) */
    /* Workspace views, each (max_batch x the layer's width) unless noted. */
    float *z[ND_MAX_LAYERS];      /* linear output (out_dim); after batch norm and an element-wise
                                     activation in place, the activation output */
    float *xhat[ND_MAX_LAYERS];   /* batch norm: normalized linear output (out_dim) */
    float *bn_buf[ND_MAX_LAYERS]; /* batch norm: inv_std (channels), then sums (2 channels + 1) */
    float *act[ND_MAX_LAYERS];    /* the layer's output (width): z, or its own buffer for maxout
                                     and the end of a residual block (z + skip, activated) */
    float *proj[ND_MAX_LAYERS];   /* end of a block with a projection: the projected skip (out_dim) */
    float *proj_xhat[ND_MAX_LAYERS], *proj_bn_buf[ND_MAX_LAYERS];      /* its batch norm, as above */
    float *drop_out[ND_MAX_LAYERS + 1], *drop_mask[ND_MAX_LAYERS + 1]; /* [0]: input, [l+1]: layer l */
    float *dc_w[ND_MAX_LAYERS];    /* DropConnect: the step's masked weights (out_dim x in_dim); backward
                                      reuses them as the weight gradient's scratch */
    float *dc_mask[ND_MAX_LAYERS]; /* DropConnect: the step's mask, 0 or 1/(1-p) (out_dim x in_dim) */
    float *delta[2];               /* ping-pong gradients w.r.t. layer outputs (max_batch x max_width) */
    float *skip_grad;              /* the gradient a block's skip path sends to the block's input
                                      (max_batch x the widest block input) */
    float *col;                    /* convolution scratch: the widest im2col of one sample */
    int *pool_arg[ND_MAX_LAYERS];  /* max pooling: each output's arg-max in its plane (out_dim) */
    int *int_workspace;            /* owns pool_arg */
    size_t col_floats;
    float *workspace; /* owns every view above */
    size_t workspace_floats;
    nd_train_pass pass; /* of the latest training forward (backward reuses it) */
    int pass_failed;    /* a reduce hook failed in the latest forward or backward */
    int trained;        /* the latest forward was a training pass */
} nd_model;

/* Sizes and allocates everything. On failure nothing needs freeing. */
nd_status nd_model_create(nd_model *model, const nd_model_spec *spec, int max_batch, nd_error *err);
void nd_model_destroy(nd_model *model);

/* Freezes the first `layers` layers (fine-tuning's frozen base): their
 * tensors lie first in the arena, [0, frozen_end), since it is laid out
 * layer by layer. A training pass then runs their batch norm with the
 * running statistics (as PyTorch's .eval() on a frozen part) and leaves
 * those statistics alone, and backward stops at the lowest trainable
 * layer: no gradient, not even the input gradient, below it. The caller
 * keeps the optimizer, penalties and exchange off [0, frozen_end).
 * layers must leave the output layer trainable. */
nd_status nd_model_freeze(nd_model *model, int layers, nd_error *err);

/* Weights drawn by `init` from a seeded stream per layer; biases zero;
 * batch norm scale 1, shift 0, running mean 0 and variance 1. */
void nd_model_init_params(nd_model *model, uint64_t seed, nd_init_kind init);

/* Moves every bias and batch-norm shift to spread * N(0, 1) and every
 * batch-norm scale to 1 + spread * N(0, 1), drawn from seed: a generic
 * point for gradient checks, away from the symmetric start where units sit
 * together at a kink. */
void nd_model_jitter(nd_model *model, uint64_t seed, float spread);

/* Output-layer biases set to log class priors, so the initial softmax
 * predicts the training set's class frequencies. counts (num_classes). */
void nd_model_bias_priors(nd_model *model, const double *counts);

/* Output-layer biases set to the log-odds log(p/(1-p)) of each attribute's
 * base rate p = positives[k] / rows (clamped to [1e-6, 1 - 1e-6]), so the
 * initial sigmoids predict the training set's rates. positives (num_classes). */
void nd_model_bias_log_odds(nd_model *model, const double *positives, double rows);

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
