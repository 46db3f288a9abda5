/* --deterministic's feed: training whose result depends on the seed, the
 * global batch and the data, not on the number of ranks.
 *
 * - The training rows are cut into M fixed blocks (--micro-batches M), one
 *   per micro-batch; a step takes `batch` rows from every block, so the
 *   global batch is M x batch whatever the rank count. Rank r owns the
 *   contiguous blocks nd_shard_range(M, r, P) and reads only their rows.
 * - Block j is shuffled each epoch by a stream seeded with (seed, epoch, j):
 *   the sample order does not depend on who owns the block.
 * - Each micro-batch gradient is computed alone (same rows, same GEMM
 *   shapes on every rank count) and summed exactly by the fixed-point
 *   exchange (exchanges/fixed_point.c).
 * - Normalization statistics are summed per block and the blocks added in
 *   block order, so they too are the same for every rank count.
 * BLAS must run with the same thread count everywhere (--threads). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/rng.h"
#include "../feed.h"
#include "../train_internal.h"

struct nd_det {
    int blocks;    /* M */
    int lo, hi;    /* this rank's blocks [lo, hi) */
    long *row_off; /* (hi - lo) first local row of each block */
    long *row_len; /* (hi - lo) rows of each block */
};

static nd_status create_blocks(nd_trainer *tr, nd_error *err) {
    const int m = tr->cfg.micro_batches;
    if (m < tr->size)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--deterministic: %d micro-batches cannot be spread over %d ranks (use --micro-batches >= %d)",
                       m, tr->size, tr->size);
    nd_det *d = calloc(1, sizeof *d);
    if (!d) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the deterministic-mode state");
    tr->det = d;
    d->blocks = m;
    long lo, cnt;
    nd_shard_range(m, tr->rank, tr->size, &lo, &cnt);
    d->lo = (int)lo;
    d->hi = (int)(lo + cnt);
    d->row_off = calloc((size_t)cnt, sizeof(long));
    d->row_len = calloc((size_t)cnt, sizeof(long));
    if (!d->row_off || !d->row_len) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the block table");
    long first0 = 0;
    for (int j = d->lo; j < d->hi; ++j) {
        long first, len;
        nd_shard_range(tr->info.train.rows, j, m, &first, &len);
        if (j == d->lo) first0 = first;
        d->row_off[j - d->lo] = first - first0;
        d->row_len[j - d->lo] = len;
    }
    return ND_OK;
}

static nd_status read_blocks(nd_trainer *tr, nd_error *err) {
    const nd_det *d = tr->det;
    return nd_shard_read_info(tr->cfg.data, &tr->info, "train", d->lo, d->hi, d->blocks, &tr->train, err);
}

static void close_rows(nd_trainer *tr) {
    nd_det *d = tr->det;
    if (!d) return;
    free(d->row_off), free(d->row_len), free(d);
    tr->det = NULL;
}

static long steps_per_epoch(const nd_trainer *tr, long *smallest) {
    /* The smallest block has floor(N / M) rows. */
    *smallest = tr->info.train.rows / tr->det->blocks;
    return *smallest / tr->cfg.batch;
}

static void order_pass(nd_trainer *tr, int epoch) {
    const nd_det *d = tr->det;
    for (int j = d->lo; j < d->hi; ++j) {
        int *idx = tr->order + d->row_off[j - d->lo];
        const long len = d->row_len[j - d->lo];
        for (long i = 0; i < len; ++i) idx[i] = (int)(d->row_off[j - d->lo] + i);
        if (!tr->cfg.shuffle) continue;
        nd_rng rng;
        nd_rng_seed(&rng, tr->cfg.seed, 0xde7u << 20 | (uint64_t)epoch, (uint64_t)j);
        nd_rng_shuffle_i32(&rng, idx, (size_t)len);
    }
}

static nd_status exact_stats(nd_trainer *tr, double *sums, nd_error *err) {
    const nd_det *d = tr->det;
    const int cols = tr->info.train.cols;
    const size_t per = 2 * (size_t)cols + 1;
    double *blocks = calloc((size_t)d->blocks * per, sizeof(double));
    if (!blocks) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate per-block statistics");
    for (int j = d->lo; j < d->hi; ++j)
        nd_stats_accumulate(blocks + (size_t)j * per, tr->train.x + (size_t)d->row_off[j - d->lo] * cols,
                            (size_t)d->row_len[j - d->lo], cols);
    /* Each element has one non-zero contributor: the sum is exact. */
    nd_status st = nd_comm_allreduce_sum_f64(tr->comm, blocks, (size_t)d->blocks * per, err);
    if (st == ND_OK) {
        memset(sums, 0, sizeof(double) * per);
        for (int j = 0; j < d->blocks; ++j)
            for (size_t i = 0; i < per; ++i) sums[i] += blocks[(size_t)j * per + i];
    }
    free(blocks);
    return st;
}

static nd_status begin_epoch(nd_trainer *tr, int epoch, long first, nd_error *err) {
    (void)first, (void)err;
    order_pass(tr, epoch);
    return ND_OK;
}

static int own_blocks(const nd_trainer *tr) { return tr->det->hi - tr->det->lo; }

/* Micro-batch k of a step is this rank's k-th block's next `batch` rows. */
static nd_status batch(nd_trainer *tr, long s, int k, const nd_shard **rows, const int **idx, nd_error *err) {
    (void)err;
    *rows = &tr->train;
    *idx = tr->order + tr->det->row_off[k] + s * tr->cfg.batch;
    return ND_OK;
}

static nd_status open_rows(nd_trainer *tr, nd_error *err) {
    if (tr->info.train.rows < tr->cfg.micro_batches)
        return ND_FAIL(err, ND_ERR_DATA, "%s: /train has %ld rows, fewer than the %d micro-batches", tr->cfg.data,
                       tr->info.train.rows, tr->cfg.micro_batches);
    ND_TRY(create_blocks(tr, err));
    return read_blocks(tr, err);
}

static int all_blocks(const nd_trainer *tr) { return tr->cfg.micro_batches; }

const nd_feed_part nd_feed_blocks = {
    .name = "blocks",
    .open = open_rows,
    .close = close_rows,
    .scan = nd_feed_scan_shard,
    .exact_stats = exact_stats,
    .steps_per_epoch = steps_per_epoch,
    .global_micro_batches = all_blocks,
    .begin_epoch = begin_epoch,
    .micro_batches = own_blocks,
    .batch = batch,
};
