/* The plain feed: this rank's shard, loaded at setup, in an order that is a
 * function of (seed, epoch, rank) alone. */
#include "nndist/normalize.h"
#include "nndist/rng.h"
#include "../feed.h"
#include "../train_internal.h"

void nd_train_order_pass(nd_trainer *tr, int pass) {
    for (int i = 0; i < tr->train.rows; ++i) tr->order[i] = i;
    if (!tr->cfg.shuffle) return;
    nd_rng rng;
    nd_rng_seed(&rng, tr->cfg.seed, 0x5u << 20 | (uint64_t)pass, (uint64_t)tr->rank);
    nd_rng_shuffle_i32(&rng, tr->order, (size_t)tr->train.rows);
}

static nd_status begin_epoch(nd_trainer *tr, int epoch, long first, nd_error *err) {
    (void)first, (void)err;
    nd_train_order_pass(tr, epoch);
    return ND_OK;
}

static nd_status batch(nd_trainer *tr, long s, int k, const nd_shard **rows, const int **idx, nd_error *err) {
    (void)k, (void)err;
    *rows = &tr->train;
    *idx = tr->order + s * tr->cfg.batch;
    return ND_OK;
}

/* A worker's block of the training rows (servers hold none). */
static nd_status open_rows(nd_trainer *tr, nd_error *err) {
    if (tr->worker_index < 0) return ND_OK;
    return nd_shard_read_info(tr->cfg.data, &tr->info, "train", tr->worker_index, tr->worker_index + 1, tr->num_workers,
                              &tr->train, err);
}

void nd_feed_count(double *acc, const nd_shard *sh) {
    if (sh->t) {
        for (size_t i = 0; i < (size_t)sh->rows * sh->target_cols; ++i) acc[i % sh->target_cols] += sh->t[i];
        acc[sh->target_cols] += sh->rows;
    } else {
        for (int i = 0; i < sh->rows; ++i) acc[sh->y[i]] += 1.0;
    }
}

nd_status nd_feed_scan_shard(nd_trainer *tr, nd_scan_kind kind, double *acc, nd_error *err) {
    (void)err;
    const nd_shard *sh = &tr->train;
    switch (kind) {
    case ND_SCAN_STATS: nd_stats_accumulate(acc, sh->x, (size_t)sh->rows, sh->cols); break;
    case ND_SCAN_RANGE: nd_range_accumulate(acc, sh->x, (size_t)sh->rows, sh->cols); break;
    case ND_SCAN_COUNTS: nd_feed_count(acc, sh); break;
    case ND_SCAN_CHECK: break; /* checked as read */
    }
    return ND_OK;
}

const nd_feed_part nd_feed_memory = {
    .name = "memory",
    .open = open_rows,
    .scan = nd_feed_scan_shard,
    .begin_epoch = begin_epoch,
    .batch = batch,
};
