/* Private to src/run: the pieces of a training step that the synchronous
 * loop (train.c) and the parameter-server loops (async.c) share. */
#ifndef NNDIST_TRAIN_INTERNAL_H
#define NNDIST_TRAIN_INTERNAL_H

#include "trainer.h"

/* Slots of the gradient buffer's tail (see ND_GRAD_TAIL). */
enum { ND_TAIL_LOSS = 0, ND_TAIL_CORRECT = 1, ND_TAIL_USED = 2 };

/* Collective: a local status made job-wide; only the lowest failing rank
 * keeps its message. */
nd_status nd_train_agree(nd_trainer *tr, nd_status st, nd_error *err);

/* Shuffle of this rank's rows for pass `pass` (seeded by seed, pass, rank). */
void nd_train_order_pass(nd_trainer *tr, int pass);

/* Gradient (sum over the batch) of the rows idx (batch) into model.grad,
 * loss sum and hit count in its tail. */
void nd_train_batch_gradient(nd_trainer *tr, const int *idx);

/* Gradient (sum over the batch) of step s of the current order into
 * model.grad, loss sum and hit count in its tail; honours --straggle. */
void nd_train_compute_gradient(nd_trainer *tr, long s);

/* The spans of layer l that weight decay and L1 act on: its weights, and
 * its biases with --regularize-bias; returns how many. */
int nd_train_regularized(const nd_trainer *tr, int l, nd_span spans[2]);

/* Weight decay, L1 and value clipping of grad[lo, hi) (clipped to the
 * trainable prefix), a sum over `samples`; returns the scale the optimizer
 * applies before any norm clip (1/samples, or 1 after value clipping). */
float nd_train_grad_penalize(nd_trainer *tr, int samples, size_t lo, size_t hi);

/* Weight decay and clipping of model.grad, a sum over `samples`; returns
 * the scale the optimizer applies (1/samples times any norm-clip factor). */
float nd_train_grad_scale(nd_trainer *tr, int samples);

/* Local loss sum, hit count and row count of shard (not collective). */
void nd_train_eval_sums(nd_trainer *tr, const nd_shard *shard, double sums[3]);

/* Rank 0: the epoch line and the metrics JSON line; the final line. */
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

/* deterministic.c (--deterministic): blocks owned by this rank, per-block
 * shuffles and statistics, and the exact fixed-point gradient sum. */
nd_status nd_det_create(nd_trainer *tr, nd_error *err);
nd_status nd_det_read_train(nd_trainer *tr, nd_error *err); /* the rows of this rank's blocks */
nd_status nd_det_alloc(nd_trainer *tr, nd_error *err);
void nd_det_free(nd_trainer *tr);
/* 1 when the latest step's fixed-point sum flagged a value that is not
 * finite or beyond the range (|g| < *limit): the numerical guard's evidence. */
int nd_det_step_bad(const nd_trainer *tr, double *limit);
long nd_det_steps_per_epoch(const nd_trainer *tr);
void nd_det_order_pass(nd_trainer *tr, int epoch);
/* sums (2 x features + 1): the statistics of the whole training split. Collective. */
nd_status nd_det_stats(nd_trainer *tr, double *sums, nd_error *err);
/* The summed gradient of step s into model.grad (and its tail). Collective. */
nd_status nd_det_step_gradient(nd_trainer *tr, long s, nd_error *err);

/* zero.c (--shard-optimizer): the slice table and the gradient slice,
 * allocated at setup; every call below is collective. */
nd_status nd_zero_create(nd_trainer *tr, nd_error *err);
void nd_zero_free(nd_trainer *tr);
/* After backward: the statistics and loss tail summed on every rank, and
 * this rank's slice of the trainable gradient summed into model.grad. */
nd_status nd_zero_reduce(nd_trainer *tr, nd_error *err);
/* Penalties and clipping over this rank's slice; *scale for the optimizer;
 * with a norm clip or want_norm, *norm is the global gradient norm (else NaN). */
nd_status nd_zero_grad_scale(nd_trainer *tr, int samples, int want_norm, float *scale, double *norm,
                             nd_error *err);
/* After the update of this rank's slice: every slice to every rank. */
nd_status nd_zero_gather(nd_trainer *tr, nd_error *err);

/* streaming.c (--stream-mb): the training rows through nd_stream. */
nd_status nd_train_stream_open(nd_trainer *tr, nd_error *err);   /* instead of reading the shard */
nd_status nd_train_stream_alloc(nd_trainer *tr, nd_error *err);  /* the window order, at setup */
/* Epoch `pass` starting at its step `first` (resume): orders and starts reading. */
nd_status nd_train_stream_epoch(nd_trainer *tr, int pass, long first, nd_error *err);
/* The next step's batch: row indices of feed.window in feed.idx. */
nd_status nd_train_stream_batch(nd_trainer *tr, nd_error *err);
/* One setup pass over every window (file order): sums for mean/std
 * (2 cols + 1), ranges for minmax (2 cols), class counts (classes), or
 * only the checks the reader makes (and the sigmoid_bce target range). */
typedef enum { ND_SCAN_STATS, ND_SCAN_RANGE, ND_SCAN_COUNTS, ND_SCAN_CHECK } nd_scan_kind;
nd_status nd_train_stream_scan(nd_trainer *tr, nd_scan_kind kind, double *acc, nd_error *err);

/* guard.c (--on-nan): 1 when the exchanged step's loss or gradient is not
 * finite, with what, in `what` (the same verdict on every rank). grad_norm:
 * the global norm with --shard-optimizer, else unused. */
int nd_guard_find(const nd_trainer *tr, double grad_norm, char *what, size_t cap);
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
