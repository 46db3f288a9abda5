/* Checkpoints in HDF5, written by rank 0; with data/ the only HDF5 user.
 *
 * Layout (format 2), readable by any HDF5 tool:
 *   /model/dense<l>/W          (out x in) float32, the layer's weights as used
 *                              in forward: out = in * W^T + b (PyTorch order)
 *   /model/dense<l>/b          (out) float32
 *   /model/bn<l>/{gamma,beta,running_mean,running_var}  (out) float32, layers
 *                              with batch norm (running_var unbiased, as PyTorch)
 *   /optimizer/m/dense<l>/{W,b}  momentum / Adam first moment (if the optimizer has it)
 *   /optimizer/v/dense<l>/{W,b}  Adam second moment (adam only)
 *   /ema/dense<l>/{W,b}          the exponential moving average of the weights (--ema)
 *   /normalization/mean, /normalization/inv_std   (features) float32
 *   (the optimizer and ema groups hold the bn<l> arrays too)
 *   root attributes: format_version, input_dim, hidden ("512,256"), arch
 *     (the canonical --arch text, which defines the network), bn_eps,
 *     num_classes, activation, optimizer, optimizer_step, step, epoch,
 *     epoch_step, epoch_loss_sum, epoch_correct, world_size, global_batch,
 *     plateau_scale, plateau_best, plateau_bad,
 *     metric_name, metric_value, config (the resolved configuration as
 *     `key = value` lines), checksum_model (FNV-1a 64 of the /model arrays
 *     layer by layer, W then b, then /normalization mean and inv_std) and
 *     checksum_optimizer (of /optimizer/m then /optimizer/v) and, with
 *     /ema, checksum_ema; 16 hex digits each.
 * There is no random-number state to save: every random stream is a pure
 * function of (seed, epoch, rank, layer), see rng.h. */
#ifndef NNDIST_CHECKPOINT_H
#define NNDIST_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "nndist/model.h"
#include "nndist/optim.h"
#include "nndist/status.h"

#define ND_CKPT_FORMAT 2

typedef struct {
    long step;             /* optimizer steps taken */
    int epoch;             /* the epoch in progress (1-based), or the last one finished */
    long epoch_step;       /* steps of `epoch` already taken (0: epoch not started) */
    double epoch_loss_sum; /* train loss and hits summed over those steps */
    double epoch_correct;
    int world_size;
    int global_batch;
    double plateau_scale, plateau_best; /* reduce-on-plateau state */
    int plateau_bad;
    char metric_name[32]; /* e.g. "val_accuracy", "" if none */
    double metric_value;
    char config[8192]; /* resolved configuration, `key = value` lines */
} nd_ckpt_meta;

/* What a checkpoint holds, as read by nd_checkpoint_probe. */
typedef struct {
    int format;
    nd_model_spec spec;
    char optimizer[16];
    long optimizer_step;
    int has_ema;                                     /* the file holds /ema (set by nd_checkpoint_read) */
    char checksum_model[24], checksum_optimizer[24]; /* as stored (16 hex digits); verified only by a read */
    nd_ckpt_meta meta;
} nd_ckpt_info;

/* Writes path atomically: a temporary file in the same directory, fsync,
 * rename, fsync of the directory. A crash at any moment leaves either the
 * old file or the complete new one. mean/inv_std: (model->spec.input_dim);
 * ema (model->num_params) or NULL. */
nd_status nd_checkpoint_write(const char *path, const nd_model *model, const nd_optimizer *opt, const float *mean,
                              const float *inv_std, const float *ema, const nd_ckpt_meta *meta, nd_error *err);

/* Reads the architecture and bookkeeping without the arrays, after checking
 * the format version. */
nd_status nd_checkpoint_probe(const char *path, nd_ckpt_info *info, nd_error *err);

/* 1 if path is an HDF5 file with a /model group (a checkpoint, good or
 * bad), 0 otherwise. */
int nd_checkpoint_is(const char *path);

/* Fills model->param, opt's state (and step), mean and inv_std from path,
 * after checking that the architecture and optimizer match and that the
 * checksums of what was read equal the stored ones. opt may be NULL (for
 * evaluation): then the optimizer state is neither read nor checked. ema
 * (num_params) may be NULL; if the file has no average, ema gets the
 * weights. Nothing is trusted before the checksums pass: on failure the
 * outputs may hold garbage. */
nd_status nd_checkpoint_read(const char *path, nd_model *model, nd_optimizer *opt, float *mean, float *inv_std,
                             float *ema, nd_ckpt_info *info, nd_error *err);

/* The newest checkpoint of dir (ckpt-step<N>.h5, largest N) that passes
 * nd_checkpoint_probe; *found = 0 when there is none. */
nd_status nd_checkpoint_latest(const char *dir, char *path, size_t cap, int *found, nd_error *err);

/* File name of the checkpoint at step (ckpt-step00001234.h5) under dir. */
void nd_checkpoint_name(char *out, size_t cap, const char *dir, long step);

/* Keeps the `keep` newest ckpt-step*.h5 of dir, deletes the rest and any
 * temporary left by a writer (of another process) that died mid-write. */
nd_status nd_checkpoint_prune(const char *dir, int keep, nd_error *err);

/* "512,256" from a spec's hidden widths. */
void nd_spec_hidden_text(const nd_model_spec *spec, char *out, size_t cap);

#endif
