/* The training loop: wires data shards, the model, the optimizer and the
 * communicator together. Everything here is collective over the trainer's
 * communicator. Setup allocates every buffer; the step never allocates. */
#ifndef NNDIST_TRAIN_H
#define NNDIST_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "nndist/comm.h"
#include "nndist/data.h"
#include "nndist/loss.h"
#include "nndist/model.h"
#include "nndist/normalize.h"
#include "nndist/optim.h"
#include "nndist/plan.h"
#include "nndist/report.h"
#include "nndist/sched.h"
#include "nndist/status.h"
#include "nndist/stream.h"

#define ND_STALENESS_BUCKETS 17

/* How a run ended, as its summary says (nd_run_status_names). */
typedef enum {
    ND_RUN_RUNNING,           /* setup done, not ended (the summary written at setup says so) */
    ND_RUN_COMPLETED,         /* every epoch */
    ND_RUN_STOPPED_BY_SIGNAL, /* SIGTERM, SIGINT, SIGUSR1 or SIGUSR2: a checkpoint of the step, exit ND_EXIT_STOPPED */
    ND_RUN_EARLY_STOPPED,     /* --early-stop */
    ND_RUN_STOPPED_ON_NAN,    /* the numerical guard (--on-nan) */
    ND_RUN_FAILED             /* an error */
} nd_run_status;
extern const char *const nd_run_status_names[];

/* The exit status of a run that a signal stopped after its checkpoint:
 * a requeue script reruns it with --resume auto (docs/clusters.md). */
#define ND_EXIT_STOPPED 3

/* The signals that stop a run cleanly, in the order of their slots in the
 * gradient's tail: each rank marks its own, the exchange sums them. */
#define ND_STOP_SIGNALS 4
extern const int nd_stop_signals[ND_STOP_SIGNALS];
/* A stop signal's name ("SIGTERM"), or "a signal". */
const char *nd_stop_signal_name(int sig);

/* Where a sync step's time goes: gathering the batch (and waiting for a
 * streamed window), forward (with the loss), backward, waiting for the
 * slowest rank to finish its backward (a barrier before the exchange), the
 * gradient exchange itself (with --bucket-kb: the part backward did not
 * hide; in deterministic mode: everything outside the compute phases) and
 * the update (running statistics, penalties, clipping, optimizer, ema). */
typedef enum {
    ND_PHASE_DATA,
    ND_PHASE_FORWARD,
    ND_PHASE_BACKWARD,
    ND_PHASE_WAIT,
    ND_PHASE_COMM,
    ND_PHASE_UPDATE,
    ND_PHASES
} nd_phase;
extern const char *const nd_phase_names[ND_PHASES];

/* A histogram of one layer's values at a monitored step: ND_HIST_BINS
 * equal bins over [lo, hi], the layer's min and max there (non-finite
 * values are left out; lo == hi: all in bin 0). */
#define ND_HIST_BINS 20
typedef struct {
    float lo, hi;
    long count[ND_HIST_BINS];
} nd_histogram;

/* Per-epoch figures, identical on every rank (the phase times are rank 0's). */
typedef struct {
    int epoch;                              /* 1-based */
    double train_loss, train_acc;           /* *_acc: the loss's metric (nd_loss_metric): accuracy, attribute
                                              accuracy (sigmoid_bce), RMSE (l2) or MAE (l1) */
    double test_loss, test_acc;             /* NaN without a test split */
    double val_loss, val_acc;               /* NaN without a val split */
    double train_eval_loss, train_eval_acc; /* the first --train-eval-rows of /train in inference mode (or NaN) */
    double lr;                              /* at the end of the epoch */
    double ema_test_acc, ema_val_acc;       /* --ema: the averaged weights' accuracy (NaN otherwise) */
    /* Health at the epoch's last step (docs/training.md, "Monitoring"): the
     * gradient's norm before clipping (with the penalties) and after it, and
     * per layer ||update|| / ||weights||, the fraction of hidden units that
     * output 0 for the whole batch, the mean/std of activations, the
     * saturated fraction (tanh |a| > 0.99, sigmoid a < 0.01 or > 0.99; NaN
     * for other activations), the norm of the layer's averaged data gradient
     * (weights and biases, before penalties and clipping) and histograms of
     * the activations and of the weight gradient. Async: server 0's figures
     * (no activations there: has_activations 0; layers outside its slice NaN). */
    int has_monitor, has_activations;
    double grad_norm, grad_norm_clipped;
    int grad_norm_slice; /* async with several servers and no worker norm: grad_norm is server 0's slice's */
    double update_ratio[ND_MAX_LAYERS], dead_frac[ND_MAX_LAYERS], act_mean[ND_MAX_LAYERS], act_std[ND_MAX_LAYERS];
    double saturation[ND_MAX_LAYERS], layer_grad_norm[ND_MAX_LAYERS];
    nd_histogram act_hist[ND_MAX_LAYERS], grad_hist[ND_MAX_LAYERS];
    /* --clip-norm/--clip-value: steps (async: updates applied) where clipping
     * changed the gradient, of the steps this process ran in the epoch */
    long clip_steps, clip_of;
    double seconds;          /* training steps only */
    double phase[ND_PHASES]; /* sync: rank 0's seconds in each phase of the epoch's steps (nd_phase) */
    double samples_per_s;
    long nan_skips; /* steps dropped by --on-nan skip this epoch */
    /* async/ssp: staleness of the gradients applied this epoch (server 0) */
    int has_staleness;
    double staleness_mean;
    long staleness_max;
    long staleness_hist[ND_STALENESS_BUCKETS]; /* [i] = count with staleness i; last = ">= last" */
} nd_epoch_stats;

typedef struct nd_trainer nd_trainer; /* the engine's own (src/run/trainer.h) */

/* What a run reports to its caller: the commands and the tests read this,
 * never the engine's fields. Filled by nd_trainer_result at any time after
 * setup; the model view stays valid until nd_trainer_free. */
typedef struct {
    const nd_model *model; /* the final parameters and the layer shapes (read only) */
    long steps;            /* sync: optimizer steps; async: updates applied (server) or sent (worker) */
    long steps_per_epoch;
    long samples_seen;             /* global samples of the finished steps */
    long gradient_buckets;         /* --bucket-kb: buckets started in the finished epochs */
    size_t optimizer_state_floats; /* held on this rank */
    int stream_windows;            /* --stream-mb: windows of this rank's rows (0: the shard is in memory) */
    int worker_index;              /* this rank among the workers; -1 on a parameter server */
    long staleness_max;            /* async/ssp: largest staleness applied */
    long nan_skips;                /* steps dropped by --on-nan skip */
    int nan_consecutive;           /* ... in a row up to the latest step */
    int agreed_failure;            /* the run stopped on a verdict every rank reached: the job can end normally */
    int best_epoch;                /* the epoch with the best validation metric (0: none) */
    double best_val;               /* and that metric */
    nd_epoch_stats last;           /* the latest finished epoch */
    nd_run_status status;          /* how the run ended (ND_RUN_RUNNING before) */
    int stop_signal;               /* ND_RUN_STOPPED_BY_SIGNAL: the signal the ranks agreed on */
    int stop_epoch;                /* ... the epoch it stopped in, */
    long stop_step;                /* ... the step (async: update) its checkpoint holds, */
    double stop_fraction;          /* how far through it, */
    const char *stop_checkpoint;   /* and the checkpoint written there ("" without --checkpoint-dir) */
} nd_train_result;

/* Allocates the trainer into *out (always: free it with nd_trainer_free,
 * also after a failure), reads the shards, normalizes, builds and
 * broadcasts the model. On error every rank returns the same failure; only
 * the rank that found it carries a message (err->msg non-empty), so the job
 * prints one line. */
nd_status nd_trainer_setup(nd_trainer **out, const nd_train_config *cfg, nd_comm *comm, nd_error *err);

/* Lets the run stop cleanly on a signal: *signal_number (set by the
 * caller's handler to SIGTERM, SIGINT, SIGUSR1 or SIGUSR2; 0 until then)
 * is read at each step and rides on the step's exchange, so every rank
 * stops after the same step, rank 0 writes a checkpoint of it and
 * nd_trainer_fit returns ND_OK with status ND_RUN_STOPPED_BY_SIGNAL. */
void nd_trainer_watch_stop(nd_trainer *tr, const volatile sig_atomic_t *signal_number);

/* Trains cfg.epochs epochs, printing progress and metrics on rank 0. A
 * failure here may be on one rank only (a collective failed): the caller
 * must end the whole job. */
nd_status nd_trainer_fit(nd_trainer *tr, nd_error *err);

/* One sync training step at rate lr, as --lr means a rate (at --ref-batch
 * samples, scaled to the global batch), whatever the schedule says: the
 * run's feed (epoch after epoch), exchange, penalties and optimizer, whose
 * state carries over to the next call; no observers (no progress,
 * checkpoints or averages). *loss: the step's mean loss over the global
 * batch, the same on every rank; NaN when the step's loss or gradient was
 * not finite, and the step was not applied. For a learning-rate range test
 * (nndist lr-find) in place of nd_trainer_fit. Allocates nothing.
 * Collective. */
nd_status nd_trainer_step(nd_trainer *tr, float lr, double *loss, nd_error *err);

/* Rank 0 writes the final model to --save (atomically, as a checkpoint
 * without optimizer state; setup named the default and checked the path);
 * the outcome is agreed by all ranks. Call it after nd_trainer_fit, when
 * every rank holds the final parameters (async mode included). */
nd_status nd_train_save_model(nd_trainer *tr, nd_error *err);

/* Rank 0 writes --summary (atomically) with the run's status; the outcome
 * is agreed by all ranks. */
nd_status nd_trainer_write_summary(nd_trainer *tr, nd_error *err);

/* A failed run: the status becomes ND_RUN_FAILED (or stays
 * ND_RUN_STOPPED_ON_NAN) with `reason`, and the summary is written, not
 * collectively: by rank 0 when every rank agreed on the failure, by this
 * rank when it failed `alone` (the job is about to be aborted, the others
 * may be anywhere; with a shared file system the file lands where rank 0's
 * would, with this rank's view of the run), and the checkpoint directory's
 * lock is released. Best effort. */
void nd_trainer_write_failed_summary(nd_trainer *tr, const char *reason, int alone);

/* Loss and accuracy of the current parameters over a split's shards. */
nd_status nd_trainer_evaluate(nd_trainer *tr, const nd_shard *shard, double *loss, double *acc, nd_error *err);

/* Adds to m->grad (num_params) the gradient of the weight penalties that a
 * run of cfg adds to a step's gradient, for one row: --weight-decay
 * (weight_decay instead when > 0; the coupled L2 even for adamw) and --l1
 * on the tensors they cover, through the trainer's own code (penalty.c).
 * For `nndist sanity`. */
void nd_train_penalty_gradient(const nd_train_config *cfg, float weight_decay, nd_model *m);

/* The run's figures as they stand (see nd_train_result). Not collective. */
nd_train_result nd_trainer_result(const nd_trainer *tr);

/* Frees everything; NULL is fine. */
void nd_trainer_free(nd_trainer *tr);

#endif
