/* Private to src/run: the pieces of a training step that the synchronous
 * loop (train.c) and the parameter-server loops (async.c) share. */
#ifndef NNDIST_TRAIN_INTERNAL_H
#define NNDIST_TRAIN_INTERNAL_H

#include "clock.h"
#include "trainer.h"

/* Slots of the gradient buffer's tail (see ND_GRAD_TAIL): the step's loss
 * and hits, then one slot per stop signal (nd_stop_signals) that counts the
 * ranks which received it. */
enum { ND_TAIL_LOSS = 0, ND_TAIL_CORRECT = 1, ND_TAIL_STOP = 2, ND_TAIL_USED = ND_TAIL_STOP + ND_STOP_SIGNALS };

/* stop.c: a signal rides on the step's exchange. nd_stop_mark puts this
 * rank's pending signal in tail (ND_TAIL_USED floats after the gradient);
 * nd_stop_agreed reads the exchanged tail: the signal most ranks received
 * (0: none), the same on every rank. */
void nd_stop_mark(const nd_trainer *tr, float *tail);
int nd_stop_agreed(const float *tail);
/* How far through its epoch a stopped run was (0..1). */
double nd_stop_fraction(const nd_trainer *tr);
/* Records a stop on sig after `epoch_step` steps (async: updates) of
 * `epoch` with their sums: the status, the reason, the name of the
 * checkpoint that will hold that step; ends the progress bar. Not
 * collective. */
void nd_stop_record(nd_trainer *tr, int sig, int epoch, long epoch_step, double loss_sum, double correct);
/* Collective, sync: after the step where the ranks agreed on sig (its
 * epoch, steps of it taken and their sums): records the stop and has rank 0
 * write the checkpoint of that step (with --checkpoint-dir). */
nd_status nd_train_stop(nd_trainer *tr, int sig, int epoch, long epoch_step, double loss_sum, double correct,
                        nd_error *err);

/* Collective: a local status made job-wide; only the lowest failing rank
 * keeps its message. A failure every rank agreed on lets the job end
 * normally (tr->state.agreed_failure). */
static inline nd_status nd_train_agree(nd_trainer *tr, nd_status st, nd_error *err) {
    int agreed = 0;
    st = nd_comm_agree_verdict(tr->comm, st, &agreed, err);
    if (agreed) tr->state.agreed_failure = 1; /* every rank stops here: the job can end normally */
    return st;
}

/* Shuffle of this rank's rows for pass `pass` (seeded by seed, pass, rank). */
void nd_train_order_pass(nd_trainer *tr, int pass);

/* Gradient (sum over the batch) of the rows idx (batch) of `rows` into
 * model.grad, loss sum and hit count in its tail, with the exchange's hooks
 * attached; the rows are augmented by (seed, epoch, row). Ticks the
 * clock's data, forward and backward phases. */
void nd_train_compute_gradient(nd_trainer *tr, const nd_shard *rows, const int *idx, int epoch, nd_clock *clock);

/* The optimizer's step on this rank's slice (param, grad: slice.length);
 * with --sim-update-ms (SimGrid) its stated time instead. */
void nd_train_update(nd_trainer *tr, float *param, const float *grad, float scale, float lr);

/* Local loss sum, hit count and row count of shard (not collective). */
void nd_train_eval_sums(nd_trainer *tr, const nd_shard *shard, double sums[3]);

/* monitor.c: the epoch's health figures around its last update. Per layer
 * whose weights and biases lie in [lo, hi) of the arena, the norm and
 * histogram of grad (num_params, times scale); the others get NaN. */
void nd_monitor_gradient(const nd_model *m, const float *grad, float scale, size_t lo, size_t hi, nd_epoch_stats *e);
/* Sync, before the update: the norms, dead units, saturation and the
 * activations; and a copy of the weights for the update ratios. */
void nd_monitor_before(nd_trainer *tr, nd_epoch_stats *e, double grad_norm, double grad_norm_clipped);
/* Async server 0, before the update: the copy of its slice [lo, hi). */
void nd_monitor_save_weights(nd_trainer *tr, size_t lo, size_t hi);
/* After the update: update/weight ratios of the layers whose weights lie in [lo, hi). */
void nd_monitor_after(nd_trainer *tr, nd_epoch_stats *e, size_t lo, size_t hi);

/* summary.c, rank 0: the epoch line and the metrics JSON line; the final line. */
void nd_train_print_epoch(nd_trainer *tr, const nd_epoch_stats *e);
/* Rank 0, --log-every: the metrics file's "step" line of step (1-based): its mean loss, rate and gradient norm
 * before clipping (NaN: null). */
void nd_train_print_step(nd_trainer *tr, int epoch, long step, double loss, double lr, double grad_norm);
/* gap_<metric>: the clean training metric (the first --train-eval-rows of
 * /train in inference mode) minus val's; the running one's without it. */
double nd_train_gap(const nd_trainer *tr, const nd_epoch_stats *e);
void nd_train_print_done(nd_trainer *tr);

/* dirlock.c: rank 0 takes --checkpoint-dir's lock (collective; refused
 * while another live run holds it), and gives it back (not collective). */
nd_status nd_train_lock_dir(nd_trainer *tr, nd_error *err);
void nd_train_unlock_dir(nd_trainer *tr);

/* observers/ema.c: the moving average's decay after `updates` updates
 * (warmed up: min(decay, (1 + t) / (10 + t))). */
float nd_ema_decay(float decay, long updates);

/* observers/ensemble.c (--ensemble): its buffers, allocated at setup
 * (K x num_params on every rank), and freed; the final line's "; ensemble
 * M" and the summary's ensemble keys (nothing without --ensemble). */
nd_status nd_ensemble_create(nd_trainer *tr, nd_error *err);
void nd_ensemble_free(nd_trainer *tr);
void nd_ensemble_final_line(const nd_trainer *tr, FILE *f);
void nd_ensemble_summary(const nd_trainer *tr, FILE *f);

/* checkpointing.c, rank 0 alone: writes the weights param (num_params) of
 * the end of `epoch` (test metric `test`, NaN if none) as
 * --checkpoint-dir/snapshot-ep<E>.h5, its path into path (cap). */
nd_status nd_train_snapshot_write(nd_trainer *tr, const float *param, int epoch, double test, char *path, size_t cap,
                                  nd_error *err);

/* summary.c, collective: the --summary file as the run starts (status
 * "running"), so a path that cannot be written is found before training
 * and a job killed outright leaves a summary that says it never ended. */
nd_status nd_train_summary_begin(nd_trainer *tr, nd_error *err);

/* checkpointing.c: creates --checkpoint-dir and, with --resume, loads the
 * checkpoint into every replica (*resumed = 1). Collective. */
nd_status nd_train_checkpoint_setup(nd_trainer *tr, int *resumed, nd_error *err);

/* --init-from: rank 0 reads the checkpoint and copies each tensor of the
 * same name and shape into model.param (the broadcast of setup's initial
 * weights then makes them every rank's), and its normalization statistics
 * when the input width is the same (*have_stats, broadcast here).
 * *head_loaded: the output bias was loaded. Collective. */
nd_status nd_train_init_from(nd_trainer *tr, int *have_stats, int *head_loaded, nd_error *err);

/* --teacher: every rank gets each teacher's network (rank 0 reads the
 * checkpoint, the weights are broadcast) and the map from the student's
 * normalized inputs to the teacher's normalization; the batch buffers of
 * distillation. After the student's statistics are final. Collective. */
nd_status nd_train_load_teachers(nd_trainer *tr, nd_error *err);

/* Rank 0 alone (not collective): writes ckpt-step<step>.h5 of the model
 * with optimizer state opt (a full-arena view) and prunes to --keep. */
nd_status nd_train_checkpoint_write(nd_trainer *tr, const nd_optimizer *opt, int epoch, long epoch_step,
                                    double loss_sum, double correct, nd_error *err);

/* Rank 0 writes ckpt-step<step>.h5 (epoch in progress, steps of it taken,
 * its loss and hits so far) and prunes to --keep; outcome agreed. */
nd_status nd_train_checkpoint_save(nd_trainer *tr, int epoch, long epoch_step, double loss_sum, double correct,
                                   nd_error *err);

/* After epoch e->epoch: a checkpoint, and a best-ep<E>-val<acc>.h5 copy when
 * `best` (its validation accuracy is the best so far). Collective. */
nd_status nd_train_checkpoint_epoch(nd_trainer *tr, const nd_epoch_stats *e, int best, nd_error *err);

/* guard.c (--on-nan), a pure verdict: 1 when the exchanged step's loss or
 * gradient in m is not finite, with what, in `what` (the same verdict on
 * every rank). sliced: each rank holds only a slice of the gradient, so
 * grad_norm (the global norm) is the evidence instead of the bias
 * gradients. */
int nd_guard_find(const nd_model *m, int sliced, double grad_norm, char *what, size_t cap);
/* A bad step: counted; ND_OK to skip it (--on-nan skip within
 * --max-nan-skips), else the failure that stops the run, agreed by every
 * rank (rank 0's error carries the line). */
nd_status nd_guard_bad_step(nd_trainer *tr, const char *what, nd_error *err);

/* fullbatch.c (--opt lbfgs): the L-BFGS state, allocated at setup, and
 * freed; one epoch = one L-BFGS step over the full batch, in place of the
 * minibatch loop's epoch (collective; fills e's training figures). */
nd_status nd_lbfgs_create_for(nd_trainer *tr, nd_error *err);
void nd_lbfgs_free(nd_trainer *tr);
nd_status nd_lbfgs_epoch(nd_trainer *tr, int epoch, nd_epoch_stats *e, nd_error *err);

/* async.c: buffers of the protocol, allocated at setup. */
nd_status nd_async_create(nd_trainer *tr, nd_error *err);
void nd_async_free(nd_trainer *tr);

/* async.c: runs servers and workers until cfg.epochs worth of samples are
 * applied; every message drained, final parameters on every rank. */
nd_status nd_async_fit(nd_trainer *tr, nd_error *err);

#endif
