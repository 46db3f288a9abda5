/* Private to src/run: the pieces of a training step that the synchronous
 * loop (train.c) and the parameter-server loops (async.c) share. */
#ifndef NNDIST_TRAIN_INTERNAL_H
#define NNDIST_TRAIN_INTERNAL_H

#include "clock.h"
#include "trainer.h"

/* Slots of the gradient buffer's tail (see ND_GRAD_TAIL). */
enum { ND_TAIL_LOSS = 0, ND_TAIL_CORRECT = 1, ND_TAIL_USED = 2 };

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
 * attached. Ticks the clock's data, forward and backward phases. */
void nd_train_compute_gradient(nd_trainer *tr, const nd_shard *rows, const int *idx, nd_clock *clock);

/* Local loss sum, hit count and row count of shard (not collective). */
void nd_train_eval_sums(nd_trainer *tr, const nd_shard *shard, double sums[3]);

/* monitor.c: the epoch's health figures around its last update (sync):
 * before it the gradient norm, dead units and activations; after it the
 * update/weight ratios. */
void nd_monitor_before(nd_trainer *tr, nd_epoch_stats *e, double grad_norm);
void nd_monitor_after(nd_trainer *tr, nd_epoch_stats *e);

/* summary.c, rank 0: the epoch line and the metrics JSON line; the final line. */
void nd_train_print_epoch(nd_trainer *tr, const nd_epoch_stats *e);
void nd_train_print_done(nd_trainer *tr);

/* checkpointing.c: creates --checkpoint-dir and, with --resume, loads the
 * checkpoint into every replica (*resumed = 1). Collective. */
nd_status nd_train_checkpoint_setup(nd_trainer *tr, int *resumed, nd_error *err);

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

/* feeds/blocks.c (--deterministic): blocks owned by this rank, per-block
 * shuffles and statistics, and the exact fixed-point gradient sum. */
nd_status nd_det_create(nd_trainer *tr, nd_error *err);
nd_status nd_det_read_train(nd_trainer *tr, nd_error *err); /* the rows of this rank's blocks */
void nd_det_free(nd_trainer *tr);
long nd_det_steps_per_epoch(const nd_trainer *tr);
void nd_det_order_pass(nd_trainer *tr, int epoch);
/* sums (2 x features + 1): the statistics of the whole training split. Collective. */
nd_status nd_det_stats(nd_trainer *tr, double *sums, nd_error *err);

/* feeds/stream.c (--stream-mb): the training rows through nd_stream. */
nd_status nd_train_stream_open(nd_trainer *tr, nd_error *err);  /* instead of reading the shard */
nd_status nd_train_stream_alloc(nd_trainer *tr, nd_error *err); /* the window order, at setup */
/* Epoch `pass` starting at its step `first` (resume): orders and starts reading. */
nd_status nd_train_stream_epoch(nd_trainer *tr, int pass, long first, nd_error *err);
/* The next step's batch: row indices of feed.window in feed.idx. */
nd_status nd_train_stream_batch(nd_trainer *tr, nd_error *err);
/* One setup pass over every window (file order): sums for mean/std
 * (2 cols + 1), ranges for minmax (2 cols), class counts (classes), or
 * only the checks the reader makes (and the sigmoid_bce target range). */
typedef enum { ND_SCAN_STATS, ND_SCAN_RANGE, ND_SCAN_COUNTS, ND_SCAN_CHECK } nd_scan_kind;
nd_status nd_train_stream_scan(nd_trainer *tr, nd_scan_kind kind, double *acc, nd_error *err);

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

/* async.c: buffers of the protocol, allocated at setup. */
nd_status nd_async_create(nd_trainer *tr, nd_error *err);
void nd_async_free(nd_trainer *tr);

/* async.c: runs servers and workers until cfg.epochs worth of samples are
 * applied; every message drained, final parameters on every rank. */
nd_status nd_async_fit(nd_trainer *tr, nd_error *err);

#endif
