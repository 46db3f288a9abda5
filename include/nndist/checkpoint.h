/* Checkpoints in HDF5, written by rank 0; with data/ the only HDF5 user.
 * The whole layout, with what a reader needs to rebuild the network without
 * nndist, is docs/checkpoints.md. In short (format 3):
 *   /model/<tensor>            every array of the model under its tensor name
 *                              (model.h: dense<l>/{W,b} (out x in) as
 *                              nn.Linear, conv<l>/{W,b} (out x in x kh x kw),
 *                              bn<l>/{gamma,beta,running_mean,running_var},
 *                              proj<l>/{W,b}, projbn<l>/...), float32
 *   /model/<layer group>       attributes describing layer l: type, shapes,
 *                              kernel/stride/padding, batch_norm, activation,
 *                              residual, dropout (pooling layers get an empty
 *                              group maxpool<l>, avgpool<l> or gap<l>)
 *   /optimizer/m/..., /optimizer/v/...  the optimizer's moments, same names
 *   /ema/...                   the weight average (--ema), same names
 *   /normalization/mean, /normalization/inv_std   (features) float32
 *   root attributes: format_version, layers (the layer groups in forward
 *     order), input_shape, input_dtype, input_scale, input_dropout,
 *     normalization, loss,
 *     input_dim, hidden, arch (the canonical --arch text), bn_eps,
 *     num_classes, activation, optimizer, optimizer_step, step, epoch,
 *     epoch_step, epoch_loss_sum, epoch_correct, world_size, global_batch,
 *     plateau_scale, plateau_best, plateau_bad, metric_name, metric_value,
 *     config, checksum_model (FNV-1a 64 of the /model arrays in the tensor
 *     table's order, then /normalization mean and inv_std),
 *     checksum_optimizer (/optimizer/m then /optimizer/v) and, with /ema,
 *     checksum_ema; 16 hex digits each. Strings are variable-length UTF-8.
 * Format 2 (still read) has the same arrays and root attributes but for
 * layers, input_shape, input_dtype, input_scale, input_dropout,
 * normalization and loss, no layer attributes, and fixed-length ASCII
 * strings. There is no random-number state to save: every random stream is
 * a pure function of (seed, epoch, rank, layer), see rng.h. */
#ifndef NNDIST_CHECKPOINT_H
#define NNDIST_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "nndist/model.h"
#include "nndist/optim.h"
#include "nndist/status.h"

#define ND_CKPT_FORMAT 3        /* written */
#define ND_CKPT_FORMAT_OLDEST 2 /* the oldest format read */

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
    /* How the inputs were prepared, for readers outside nndist: the data's
     * stored values times input_scale (0: unknown, written as 1), then
     * (x - mean) * inv_std. Read back by nd_checkpoint_probe (format 3). */
    float input_scale;
    int input_uint8;        /* the training data's x is uint8 (else float) */
    char normalization[16]; /* --normalize that made mean/inv_std, "" if unknown */
    char loss[24];          /* the loss the outputs were trained for, "" if unknown */
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

/* Points the symbolic link dir/latest at the newest ckpt-step*.h5 of dir
 * (a relative link, replaced atomically: a new link under a temporary name,
 * then rename), or removes it when there is none. A `latest` that is not a
 * symbolic link (the user's file) is left alone, and so is a file system
 * without symbolic links: the link is a convenience for users and scripts,
 * nothing in nndist reads it (--resume auto scans the names). */
nd_status nd_checkpoint_link_latest(const char *dir, nd_error *err);

/* "512,256" from a spec's hidden widths. */
void nd_spec_hidden_text(const nd_model_spec *spec, char *out, size_t cap);

#endif
