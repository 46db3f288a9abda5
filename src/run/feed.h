/* Feeds: where a sync step's rows come from. Each is one part behind this
 * ops table, in its own file under feeds/, chosen once at setup from the
 * plan (nd_train_plan.feed). The training loop asks the feed for the
 * step's micro-batches and knows no feed by name. */
#ifndef NNDIST_FEED_H
#define NNDIST_FEED_H

#include "nndist/data.h"
#include "nndist/plan.h"
#include "nndist/train.h" /* the nd_trainer name */

typedef struct {
    const char *name;
    /* Epoch `epoch` (1-based), starting at its step `first` (resume):
     * orders the rows (and starts reading, when streaming). */
    nd_status (*begin_epoch)(nd_trainer *tr, int epoch, long first, nd_error *err);
    /* Micro-batches of `batch` rows this rank computes per step. */
    int (*micro_batches)(const nd_trainer *tr);
    /* Micro-batch k of step s: *rows is the shard (or window) that *idx
     * (batch row indices) points into. May wait for a window. */
    nd_status (*batch)(nd_trainer *tr, long s, int k, const nd_shard **rows, const int **idx, nd_error *err);
} nd_feed_part;

extern const nd_feed_part nd_feed_memory, nd_feed_stream, nd_feed_blocks;

/* The table: one entry per feed. */
extern const nd_feed_part *const nd_feed_parts[ND_FEEDS];

#endif
