/* The trainer's state, private to the engine (src/run): the commands and
 * the tests see nd_trainer as an opaque type and read nd_train_result. */
#ifndef NNDIST_TRAINER_H
#define NNDIST_TRAINER_H

#include "nndist/augment.h"
#include "nndist/lbfgs.h"
#include "nndist/train.h"
#include "exchange.h"
#include "feed.h"
#include "observer.h"

typedef struct nd_async nd_async;         /* the parameter-server protocol's buffers (async.c) */
typedef struct nd_det nd_det;             /* deterministic mode's blocks (feeds/blocks.c) */
typedef struct nd_snapshots nd_snapshots; /* --ensemble's members (observers/ensemble.c) */
/* A distillation teacher: a trained network and how the student's
 * normalized inputs map to its own normalization. */
typedef struct {
    nd_model model; /* max_batch: the training batch; inference passes only */
    float *scale;   /* (cols) x_teacher = x * scale + shift (its statistics against the student's); */
    float *shift;   /* NULL when they are the same: the batch as it is */
} nd_teacher;

/* --stream-mb: where the training rows come from instead of train.x. */
typedef struct {
    nd_stream *reader;             /* NULL: the shard is in memory */
    nd_shard window;               /* view of the window in use (the reader's buffer) */
    int *window_order;             /* (windows) this epoch's order of the windows */
    long window_rows;              /* rows per window, a multiple of the batch */
    int pass;                      /* the epoch being fed */
    long skip;                     /* batches of the next window already done (resume) */
    long batches_left, next_batch; /* in the current window */
    const int *idx;                /* (batch) the step's rows in window */
} nd_stream_feed;

/* What the run has done so far: the one record the loop and its parts
 * change between steps (the replica's buffers aside). A checkpoint saves
 * the step, the position in the epoch with its sums and the plateau record,
 * and a resume restores them; the rest belongs to this run. */
typedef struct {
    long step;                            /* sync: optimizer steps; async: updates applied (server) or sent (worker) */
    int start_epoch;                      /* first epoch to run (> 1 after --resume) */
    long start_epoch_step;                /* steps of start_epoch already taken */
    double start_loss_sum, start_correct; /* and their train loss / hits */
    double plateau_best;                  /* --lr-schedule plateau: best validation metric and epochs without it */
    int plateau_bad;
    double plateau_scale; /* the factor a resumed run starts from */
    /* the best validation metric so far, its epoch (0: none yet), and the
     * epochs since: the best checkpoint copy and --early-stop follow them */
    int best_epoch, epochs_without_gain;
    double best_val;
    long nan_skips;      /* steps dropped by --on-nan skip in the run */
    int nan_consecutive; /* ... in a row up to the latest step */
    int agreed_failure;  /* the run stopped on a verdict every rank reached (only rank 0 has the line) */
    long staleness_max;  /* async/ssp: largest staleness applied in the run */
    double train_seconds;
    double phase[ND_PHASES]; /* seconds in each phase: this epoch so far, then the run's total in phase_total */
    double phase_total[ND_PHASES];
    long samples_seen;     /* global samples of all finished steps */
    long gradient_buckets; /* --bucket-kb: buckets started in the run's finished epochs */
    nd_epoch_stats last;   /* the latest finished epoch */
    nd_run_status status;  /* how the run ended; the summary's "status" */
    char reason[640];      /* what ended it, in words (the summary's "reason") */
    /* a stop on a signal: the signal, where (epoch, steps of it taken and
     * their sums) and the checkpoint of that step */
    int stop_signal, stop_epoch;
    long stop_step; /* the step (sync) or server version (async) of the checkpoint */
    long stop_epoch_step;
    double stop_loss_sum, stop_correct;
    char stop_checkpoint[ND_PATH_MAX + 64];
} nd_train_state;

struct nd_trainer {
    nd_train_config cfg;
    nd_train_plan plan; /* the exchange and feed cfg resolved to */
    nd_comm *comm;      /* not owned */
    int rank, size;
    nd_dataset_info info;
    nd_shard train, test, val; /* train.x/y/t stay NULL with --stream-mb (rows and first_row are set) */
    nd_shard train_eval;       /* the first train_eval_rows rows of /train, this rank's part, read at setup */
    long train_eval_rows;      /* over all ranks; 0: no clean training metric */
    nd_stream_feed feed;
    nd_norm_kind norm;
    float *norm_mean;    /* (cols) */
    float *norm_inv_std; /* (cols) */
    nd_model model;
    nd_optimizer opt;
    nd_lbfgs *lbfgs; /* --opt lbfgs: the full-batch driver's state (fullbatch.c), else NULL */
    nd_lr_schedule lr;
    int global_batch;
    long steps_per_epoch;
    int threads;               /* BLAS threads in use */
    int *order;                /* (train.rows) local row order of the current epoch */
    float *xb;                 /* (batch x cols) gathered batch */
    int *yb;                   /* (batch) labels, or NULL with a target loss */
    float *tb;                 /* (batch x outputs) targets of a regression/multi-label loss, or NULL */
    long *row_ids;             /* (batch) global sample index of each batch row (dropout masks) */
    nd_augment_config augment; /* the training rows' transforms, from the options */
    nd_image_shape image;      /* the data's image shape (all 0: none) */
    float *augment_scratch;    /* (cols) one sample, when a per-sample transform is on */
    float *mixup_lam;          /* (batch) each row's mixup weight, or NULL */
    int num_teachers;          /* --teacher: distillation's teachers (0: none) */
    nd_teacher *teachers;      /* (num_teachers), loaded at setup */
    float *teacher_x;          /* (batch x cols) the batch in a teacher's normalization */
    float *soft;               /* (batch x outputs) the teachers' mean softened probabilities */
    nd_loss_kind loss;
    int async;                  /* --mode async or ssp: parameter servers */
    int num_servers;            /* K ranks 0..K-1 (0 in sync mode) */
    int num_workers;            /* ranks that compute gradients */
    int worker_index;           /* this rank among the workers; -1 on a server */
    nd_span slice;              /* the part of the flat arena this rank updates and keeps optimizer state for:
                                   a server's in async mode, this rank's with --shard-optimizer, else all */
    nd_async *as;               /* async/ssp state, NULL in sync mode */
    nd_det *det;                /* --deterministic's blocks, NULL otherwise */
    nd_exchange exchange;       /* sync: how the step's gradients are summed (part NULL in async mode) */
    const nd_feed_part *feeder; /* sync: where the step's rows come from */
    const nd_observer_part *observers[ND_MAX_OBSERVERS]; /* sync: those the options ask for, in table order */
    int num_observers;
    nd_penalty penalty;      /* weight decay, L1 and clipping of the summed gradient */
    nd_watchdog *watchdog;   /* --timeout > 0 on > 1 rank: watches the step's blocking exchanges, else NULL */
    nd_report report;        /* rank 0's output */
    float *ema;              /* --ema: (num_params) moving average of the weights, or NULL */
    float *best_param;       /* --early-stop: (num_params) weights of the best epoch, or NULL */
    nd_snapshots *snapshots; /* --ensemble: the kept epochs' weights and the ensemble's figures, or NULL */
    float *decay_mask;       /* adamw: (num_params) 1 on weights, 0 on biases and padding */
    float *monitor_prev;     /* (num_params) weights before the epoch's last update, for update ratios */
    nd_train_state state;    /* what the run has done so far */
    const volatile sig_atomic_t *stop_request; /* the caller's signal flag (nd_trainer_watch_stop), or NULL */
    double start_time;                         /* wall clock (s since 1970) at setup, for the summary */
    int dir_locked;                            /* rank 0 holds --checkpoint-dir's lock (dirlock.c) */
    char hosts[1024];                          /* rank 0: the job's host names, "a (2 ranks), b" */
    double memory_mb[5];                       /* largest over ranks, at the summary: peak RSS, data shards, parameters,
                                                  activations, optimizer state */
};

#endif
