/* Feeds: where a sync step's rows come from. Each is one part behind this
 * ops table, in its own file under feeds/, chosen once at setup from the
 * plan (nd_train_plan.feed). The training loop asks the feed for the
 * step's micro-batches and knows no feed by name. */
#ifndef NNDIST_FEED_H
#define NNDIST_FEED_H

#include "nndist/data.h"
#include "nndist/plan.h"
#include "nndist/train.h" /* the nd_trainer name */

/* What a setup pass over this rank's training rows gathers: statistics
 * sums (2 cols + 1), ranges for minmax (2 cols), class counts (classes;
 * with float targets: each column's sum (K), then the rows), or only the
 * checks (values, labels, sigmoid_bce's target range). */
typedef enum { ND_SCAN_STATS, ND_SCAN_RANGE, ND_SCAN_COUNTS, ND_SCAN_CHECK } nd_scan_kind;

typedef struct {
    const char *name;
    /* Setup: reads or opens this rank's training rows (none on a parameter
     * server) and sizes what the feed keeps (NULL-safe to free after a
     * failure with close). */
    nd_status (*open)(nd_trainer *tr, nd_error *err);
    /* Setup, after the model exists: the feed's buffers (NULL: none). */
    nd_status (*alloc)(nd_trainer *tr, nd_error *err);
    void (*close)(nd_trainer *tr);
    /* Setup, not collective: folds this rank's training rows into acc. */
    nd_status (*scan)(nd_trainer *tr, nd_scan_kind kind, double *acc, nd_error *err);
    /* Setup, collective, optional: the statistics sums of the whole split,
     * the same whatever the rank count (NULL: scan, then an allreduce). */
    nd_status (*exact_stats)(nd_trainer *tr, double *sums, nd_error *err);
    /* Steps per epoch when the smallest shard does not set them (NULL),
     * and the rows of the smallest part that sets them. */
    long (*steps_per_epoch)(const nd_trainer *tr, long *smallest);
    /* The normalization statistics are final (NULL: nothing to do; the
     * rows in memory are normalized by setup). */
    void (*normalization_ready)(nd_trainer *tr);
    /* Micro-batches of `batch` rows in a step over all ranks (NULL: one per rank). */
    int (*global_micro_batches)(const nd_trainer *tr);
    /* Rows of the order buffer: the shard's, or a window's (NULL: the shard's). */
    long (*order_rows)(const nd_trainer *tr);
    /* Training rows held in memory at a time (NULL: the shard). */
    long (*held_rows)(const nd_trainer *tr);
    /* Epoch `epoch` (1-based), starting at its step `first` (resume):
     * orders the rows (and starts reading, when streaming). */
    nd_status (*begin_epoch)(nd_trainer *tr, int epoch, long first, nd_error *err);
    /* Micro-batches of `batch` rows this rank computes per step (NULL: one). */
    int (*micro_batches)(const nd_trainer *tr);
    /* Micro-batch k of step s: *rows is the shard (or window) that *idx
     * (batch row indices) points into. May wait for a window. */
    nd_status (*batch)(nd_trainer *tr, long s, int k, const nd_shard **rows, const int **idx, nd_error *err);
} nd_feed_part;

extern const nd_feed_part nd_feed_memory, nd_feed_stream, nd_feed_blocks;

/* Adds sh's class counts to acc (classes), or with float targets each
 * column's sum to acc[0..K) and its rows to acc[K]. */
void nd_feed_count(double *acc, const nd_shard *sh);

/* The memory feed's scan of train (also the blocks feed's, whose rows are loaded). */
nd_status nd_feed_scan_shard(nd_trainer *tr, nd_scan_kind kind, double *acc, nd_error *err);

/* Gathers the step's rows idx (batch) of src into the trainer's batch
 * buffers (features, labels or targets, global row ids), then applies the
 * augmentation of the options, drawn by (seed, epoch, row id): whatever
 * feed served the rows, each sample is transformed the same way. */
void nd_feed_gather(nd_trainer *tr, const nd_shard *src, const int *idx, int epoch);

/* The table: one entry per feed. */
extern const nd_feed_part *const nd_feed_parts[ND_FEEDS];

#endif
