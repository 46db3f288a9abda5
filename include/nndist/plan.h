/* The options of `nndist train` and the plan resolved from them.
 *
 * nd_train_config is what the user said: one field per option of the table
 * nd_train_options (defaults, ranges, choices and help live there), every
 * choice an enum and every amount a number; text only for paths and for the
 * little languages (--arch, --hidden, --lr-milestones, --straggle).
 * nd_train_plan_resolve validates it once and decides the run's parts: the
 * way gradients are exchanged and the way batches are fed. Whether an option
 * can go with a part is read from the part's capabilities
 * (nd_exchange_caps), not from hand-written pairs of options. Nothing after
 * setup looks at option text. No MPI here. */
#ifndef NNDIST_PLAN_H
#define NNDIST_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "nndist/cli.h"
#include "nndist/layers.h"
#include "nndist/lbfgs.h"
#include "nndist/loss.h"
#include "nndist/model.h"
#include "nndist/normalize.h"
#include "nndist/optim.h"
#include "nndist/report.h"
#include "nndist/sched.h"
#include "nndist/status.h"

#define ND_PATH_MAX 4096
#define ND_MAX_TEACHERS 8

typedef enum { ND_MODE_SYNC, ND_MODE_ASYNC, ND_MODE_SSP, ND_MODE_LOCAL } nd_mode_kind;
typedef enum { ND_BIAS_ZERO, ND_BIAS_PRIORS } nd_output_bias_kind;
typedef enum { ND_ON_NAN_STOP, ND_ON_NAN_SKIP } nd_on_nan_kind;
/* --compress: how sync mode's gradient goes on the wire. */
typedef enum {
    ND_COMPRESS_NONE,
    ND_COMPRESS_FP16,
    ND_COMPRESS_BF16,
    ND_COMPRESS_TOPK,
    ND_COMPRESS_POWERSGD
} nd_compress_kind;

/* Every field is an option of `nndist train` (the table in plan.c). */
typedef struct {
    char config[ND_PATH_MAX];
    char data[ND_PATH_MAX];
    nd_mode_kind mode;
    int servers;
    int max_staleness;
    bool staleness_lr;
    bool overlap;
    int sync_every;       /* --mode local: average the replicas every H steps */
    long sync_warmup;     /* --mode local: the first S steps are plain sync steps (post-local SGD) */
    float outer_momentum; /* --mode local: the outer Nesterov momentum of the averages (0: plain) */
    float outer_lr;       /* --mode local: the outer step on the averaged pseudo-gradient (1: plain) */
    char straggle[64];
    int sim_sample;
    float sim_step_ms;   /* SimGrid: a step's data, forward and backward take this long, not computed */
    float sim_step_cv;   /* SimGrid: the stated step's coefficient of variation (lognormal per rank and step) */
    float sim_update_ms; /* SimGrid: an optimizer update of the whole arena takes this long, not computed */
    bool deterministic;
    int micro_batches;
    char arch[512];
    char hidden[256];
    nd_act_kind act;
    float leaky_alpha, elu_alpha;
    int maxout_pieces;
    bool batch_norm, sync_bn;
    float bn_momentum, bn_eps;
    float dropout, input_dropout;
    float dropconnect; /* --dropconnect: DropConnect probability of every hidden layer's weights */
    int augment_crop;  /* --augment-crop: pad pixels of the random crop (0: off) */
    bool augment_flip; /* --augment-flip */
    int cutout;        /* --cutout: side of the erased square (0: off) */
    float input_noise; /* --input-noise: std of Gaussian noise on the inputs (0: off) */
    float mixup;       /* --mixup: Beta parameter (0: off) */
    bool regularize_bias;
    nd_init_kind init;
    nd_output_bias_kind output_bias;
    nd_loss_kind loss;
    char teacher[ND_PATH_MAX]; /* --teacher: checkpoints, comma-separated ("" for none) */
    float distill_t;           /* --distill-t: the softmax temperature */
    float distill_alpha;       /* --distill-alpha: weight of the teachers' part */
    int epochs;
    int batch;
    nd_opt_kind opt;
    float lr;
    int ref_batch;
    float momentum, momentum_final, momentum_epochs, beta1, beta2, eps, rho;
    float rmsprop_momentum;                            /* --rmsprop-momentum (0: plain rmsprop) */
    int lbfgs_history, lbfgs_max_iter, lbfgs_max_eval; /* --opt lbfgs (nndist/lbfgs.h) */
    nd_line_search_kind lbfgs_line_search;
    float lbfgs_tolerance_grad, lbfgs_tolerance_change;
    long warmup_steps;
    float warmup_start; /* --warmup-start: the warmup's first rate as a fraction of the target */
    bool warmup_goyal;  /* --warmup-goyal: ramp from --lr to the scaled peak instead */
    nd_sched_kind lr_schedule;
    char lr_milestones[256];
    float lr_gamma, lr_k, lr_min, sgdr_t0, sgdr_mult, gbc_tau, gbc_floor;
    float onecycle_pct, onecycle_div, onecycle_final_div;
    int plateau_patience;
    float clip_norm, clip_value, weight_decay, l1, max_norm;
    uint64_t seed;
    bool shuffle;
    char val_fold[32];
    nd_norm_kind normalize;
    int eval_batch;
    long train_eval_rows; /* --train-eval-rows: -1 = the size of /val (else /test), 0 = off */
    int threads;
    int bucket_kb;
    nd_compress_kind compress; /* --compress */
    float topk_ratio;          /* --topk-ratio: fraction of the gradient's entries each rank sends */
    int powersgd_rank;         /* --powersgd-rank */
    bool shard_optimizer;
    float stream_mb;
    nd_on_nan_kind on_nan;
    float timeout;
    int max_nan_skips;
    long fault_nan_step;
    long fault_signal_step;
    int fault_signal; /* index into nd_stop_signals */
    int profile;
    nd_progress_kind progress;
    bool quiet;        /* --quiet: only the final line */
    bool print_config; /* --print-config: every option at the start, not only the changed ones */
    int early_stop;
    float ema;
    char ensemble[16]; /* --ensemble last:K or best:K, "" off */
    char checkpoint_dir[ND_PATH_MAX];
    long checkpoint_every;
    int keep;
    char resume[ND_PATH_MAX];
    char init_from[ND_PATH_MAX]; /* --init-from: fine-tuning's starting weights, "" for none */
    char freeze[256];            /* --freeze: the frozen base, "" for none (nd_parse_freeze) */
    char metrics[ND_PATH_MAX];
    int log_every; /* --log-every: a "step" line in --metrics every N steps (0: off) */
    char summary[ND_PATH_MAX];
    char save[ND_PATH_MAX]; /* --save: the final model file; "" until setup names the default, "none": no file */
} nd_train_config;

extern const nd_cli_option nd_train_options[];
extern const int nd_train_num_options;
extern const nd_cli_topic nd_train_topics[];
extern const int nd_train_num_topics;
extern const char *const nd_mode_names[];     /* indexed by nd_mode_kind, NULL-terminated */
extern const char *const nd_compress_names[]; /* indexed by nd_compress_kind, NULL-terminated */

/* Fills defaults, then parses argv (options after `train`). */
nd_status nd_train_config_parse(nd_train_config *cfg, int argc, char **argv, int *help, nd_error *err);

/* How a step's gradients become an update: one of the sync exchanges, or
 * the parameter servers (async and ssp), which drive their own loop. */
typedef enum {
    ND_EXCHANGE_ALLREDUCE,    /* one blocking allreduce after backward */
    ND_EXCHANGE_BUCKETS,      /* --bucket-kb: Iallreduce buckets during backward */
    ND_EXCHANGE_ZERO,         /* --shard-optimizer: reduce-scatter, update a slice, allgather */
    ND_EXCHANGE_FIXED_POINT,  /* --deterministic: exact integer sum of micro-batch gradients */
    ND_EXCHANGE_TOPK,         /* --compress topk: the largest entries, allgathered, error feedback */
    ND_EXCHANGE_POWERSGD,     /* --compress powersgd: low-rank P and Q allreduced, error feedback */
    ND_EXCHANGE_LOCAL,        /* --mode local: each rank steps alone, replicas averaged every H steps */
    ND_EXCHANGE_PARAM_SERVER, /* --mode async/ssp */
    ND_EXCHANGE_WIRE16,       /* --compress fp16|bf16: 16-bit values on the wire, fp32 sums */
    ND_EXCHANGES
} nd_exchange_kind;

/* Where the training rows come from. */
typedef enum {
    ND_FEED_MEMORY, /* this rank's shard, loaded at setup */
    ND_FEED_STREAM, /* --stream-mb: windows of the shard read in the background */
    ND_FEED_BLOCKS, /* --deterministic: fixed blocks of the whole split, whatever the rank count */
    ND_FEEDS
} nd_feed_kind;

/* What an exchange can do; an option that needs what its exchange cannot
 * do is refused at setup with the reason. Each exchange declares its own
 * (src/run/exchanges/): a new exchange adds its part, not checks. */
typedef struct {
    const char *name;      /* for messages: "allreduce" */
    const char *chosen_by; /* the option that picks it: "--bucket-kb" */
    /* Whether cfg asks for this exchange (NULL: the default, picked when
     * no other is asked for). At most one may be asked for. */
    bool (*chosen)(const nd_train_config *cfg);
    bool sync_bn;       /* batch-norm sums can be added across ranks inside forward and backward */
    bool skip_step;     /* a bad step can be dropped on every rank alike (--on-nan skip) */
    bool whole_replica; /* every rank holds every parameter after a step (--max-norm, --ema,
                           --early-stop, the plateau schedule) */
    bool streams;       /* takes a streamed feed (--stream-mb) */
    bool sliced;        /* each rank holds only its slice of the reduced gradient */
    bool freezes;       /* leaves a frozen base out of the exchange and the update (--freeze) */
} nd_exchange_caps;

/* The capabilities of an exchange. */
const nd_exchange_caps *nd_exchange_caps_of(nd_exchange_kind kind);

/* The run as decided at setup, before any data is read. */
typedef struct {
    nd_exchange_kind exchange;
    nd_feed_kind feed;
    bool ssp;                /* the parameter servers bound staleness (--mode ssp) */
    int straggle_rank;       /* --straggle: the rank slowed down, -1 for none */
    float straggle_factor;   /* and by how much (>= 1) */
    int val_fold, val_folds; /* --val-fold FOLD/FOLDS (1-based), 0/0 for none */
} nd_train_plan;

/* Validates cfg (ranges, choices, the texts, and every option against the
 * capabilities of the exchange and feed it implies) and fills the plan.
 * Not collective: every rank reaches the same verdict from the same cfg. */
nd_status nd_train_plan_resolve(const nd_train_config *cfg, nd_train_plan *plan, nd_error *err);

/* The learning-rate schedule of cfg for a run of global_batch samples per
 * step and steps_per_epoch steps per epoch (milestones and periods given in
 * epochs become steps). */
nd_status nd_train_make_schedule(const nd_train_config *cfg, int global_batch, long steps_per_epoch,
                                 nd_lr_schedule *out, nd_error *err);

/* --ensemble's "last:K" or "best:K" (K in [2, 64]): *best and *count;
 * 0, or -1 when text is neither. */
int nd_ensemble_parse(const char *text, int *best, int *count);
/* Parses --freeze: layer numbers (as in the checkpoint's tensor names:
 * 0 is dense0 or conv0), ranges and group names, "0-2", "0,1,2",
 * "conv0,conv1"; they must be the first layers, a frozen base. Sets
 * *layers to their count (0 for ""); -1 with why filled if bad. */
int nd_parse_freeze(const char *text, int *layers, char *why, size_t cap);

/* Parses "512,256" into widths (at most max); returns the count or -1. */
int nd_parse_widths(const char *text, int *widths, int max);

/* The network of cfg for data of input_dim features (image: their shape,
 * all 0 for flat data) and k outputs: --arch if given (its end widths
 * must match; an image input must be the data's image shape), else
 * --hidden, --act, --batch-norm, --dropout and --input-dropout. */
nd_status nd_train_model_spec(const nd_train_config *cfg, int input_dim, nd_image_shape image, int k,
                              nd_model_spec *spec, nd_error *err);

#endif
