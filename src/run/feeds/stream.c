/* --stream-mb: sync training from a streaming reader instead of a shard held
 * in memory. The rank's training rows come in windows (a multiple of the
 * batch, two of them in memory); each epoch visits the windows in a seeded
 * order and the rows of each window in a seeded order, so a step's batch is
 * a function of (seed, epoch, rank, step) and resume stays exact. The
 * setup passes (statistics, class counts, target checks) scan the windows
 * once in file order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/rng.h"
#include "../feed.h"
#include "../train_internal.h"

static nd_status open_rows(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    const nd_split_info *si = &tr->info.train;
    const double row_bytes = sizeof(float) * ((double)si->cols + (si->target_cols ? si->target_cols : 1));
    /* Two windows within the cap, each a whole number of batches. */
    long window = (long)((double)c->stream_mb * 1048576.0 / 2.0 / row_bytes) / c->batch * c->batch;
    if (window < c->batch)
        return ND_FAIL(err, ND_ERR_ARG, "--stream-mb %g: two windows of one batch (%d rows of %.0f bytes) do not fit",
                       (double)c->stream_mb, c->batch, row_bytes);
    ND_TRY(nd_stream_open(c->data, "train", tr->worker_index, tr->num_workers, tr->info.num_classes, window,
                          &tr->feed.reader, err));
    const long rows = nd_stream_rows(tr->feed.reader);
    if (rows > INT32_MAX)
        return ND_FAIL(err, ND_ERR_DATA, "%s: /train: %ld rows on one rank are too many", c->data, rows);
    tr->train.rows = (int)rows;
    tr->train.first_row = nd_stream_first_row(tr->feed.reader);
    tr->train.target_cols = si->target_cols;
    tr->feed.window_rows = window < rows ? window : rows;
    return ND_OK;
}

static nd_status alloc(nd_trainer *tr, nd_error *err) {
    const int windows = nd_stream_windows(tr->feed.reader);
    if (!(tr->feed.window_order = calloc((size_t)windows, sizeof(int))))
        return ND_FAIL(err, ND_ERR_NOMEM, "--stream-mb: cannot allocate the order of %d windows", windows);
    return ND_OK;
}

/* Epoch `pass`: the windows' order, then the window holding step `first`
 * and how many of its batches are already done. */
static nd_status stream_epoch(nd_trainer *tr, int pass, long first, nd_error *err) {
    nd_stream *s = tr->feed.reader;
    const int windows = nd_stream_windows(s), b = tr->cfg.batch;
    for (int w = 0; w < windows; ++w) tr->feed.window_order[w] = w;
    if (tr->cfg.shuffle) {
        nd_rng rng;
        nd_rng_seed(&rng, tr->cfg.seed, 0x57u << 20 | (uint64_t)pass, (uint64_t)tr->rank);
        nd_rng_shuffle_i32(&rng, tr->feed.window_order, (size_t)windows);
    }
    int k = 0;
    long skip = first;
    while (k < windows && skip >= nd_stream_window_rows(s, tr->feed.window_order[k]) / b)
        skip -= nd_stream_window_rows(s, tr->feed.window_order[k++]) / b;
    tr->feed.pass = pass;
    tr->feed.skip = skip;
    tr->feed.batches_left = 0; /* the first step loads window k */
    return nd_stream_start(s, tr->feed.window_order, windows, k, err);
}

/* Before step s: the batch's row indices (into tr->window) in tr->feed.idx,
 * loading and shuffling the next window when this one is used up. */
static nd_status stream_batch(nd_trainer *tr, nd_error *err) {
    const int b = tr->cfg.batch;
    /* A window shorter than a batch (the block's last) gives no batch: on
     * to the next one. */
    while (tr->feed.batches_left <= 0) {
        ND_TRY(nd_stream_next(tr->feed.reader, &tr->feed.window, err));
        const int rows = tr->feed.window.rows;
        for (int i = 0; i < rows; ++i) tr->order[i] = i;
        if (tr->cfg.shuffle) {
            nd_rng rng;
            nd_rng_seed(&rng, tr->cfg.seed, 0x58u << 20 | (uint64_t)tr->feed.pass,
                        (uint64_t)tr->rank << 32 |
                            (uint64_t)((tr->feed.window.first_row - tr->train.first_row) / tr->feed.window_rows));
            nd_rng_shuffle_i32(&rng, tr->order, (size_t)rows);
        }
        tr->feed.batches_left = rows / b - tr->feed.skip;
        tr->feed.next_batch = tr->feed.skip;
        tr->feed.skip = 0;
    }
    tr->feed.idx = tr->order + (size_t)tr->feed.next_batch * b;
    tr->feed.next_batch += 1;
    tr->feed.batches_left -= 1;
    return ND_OK;
}

/* ---- setup passes over the windows ---- */

typedef struct {
    nd_trainer *tr;
    double *acc; /* statistics sums or ranges, or class counts */
    nd_scan_kind kind;
} scan_ctx;

static nd_status scan_window(void *ctx, const nd_shard *w, nd_error *err) {
    scan_ctx *sc = ctx;
    nd_trainer *tr = sc->tr;
    switch (sc->kind) {
    case ND_SCAN_STATS: nd_stats_accumulate(sc->acc, w->x, (size_t)w->rows, w->cols); break;
    case ND_SCAN_RANGE: nd_range_accumulate(sc->acc, w->x, (size_t)w->rows, w->cols); break;
    case ND_SCAN_COUNTS: nd_feed_count(sc->acc, w); break;
    case ND_SCAN_CHECK:
        for (size_t i = 0; w->t && nd_loss_multilabel(tr->loss) && i < (size_t)w->rows * w->target_cols; ++i)
            if (!(w->t[i] >= 0.0f && w->t[i] <= 1.0f))
                return ND_FAIL(err, ND_ERR_DATA, "%s: /train/y[%ld][%zu] = %g: --loss %s needs targets in [0, 1]",
                               tr->cfg.data, w->first_row + (long)(i / w->target_cols), i % w->target_cols,
                               (double)w->t[i], nd_loss_name(tr->loss));
    }
    return ND_OK;
}

static nd_status scan(nd_trainer *tr, nd_scan_kind kind, double *acc, nd_error *err) {
    scan_ctx sc = {tr, acc, kind};
    return nd_stream_scan(tr->feed.reader, scan_window, &sc, err);
}

static nd_status begin_epoch(nd_trainer *tr, int epoch, long first, nd_error *err) {
    return stream_epoch(tr, epoch, first, err);
}

static nd_status batch(nd_trainer *tr, long s, int k, const nd_shard **rows, const int **idx, nd_error *err) {
    (void)s, (void)k;
    ND_TRY(stream_batch(tr, err));
    *rows = &tr->feed.window;
    *idx = tr->feed.idx;
    return ND_OK;
}

static void close_rows(nd_trainer *tr) {
    nd_stream_close(tr->feed.reader);
    tr->feed.reader = NULL;
    free(tr->feed.window_order);
    tr->feed.window_order = NULL;
}

/* Rows read from now on are normalized by the reader's thread. */
static void normalization_ready(nd_trainer *tr) {
    if (tr->norm != ND_NORM_NONE) nd_stream_set_normalize(tr->feed.reader, tr->norm_mean, tr->norm_inv_std);
}

static long window_rows(const nd_trainer *tr) { return tr->feed.window_rows; }

static long two_windows(const nd_trainer *tr) { return 2 * tr->feed.window_rows; }

const nd_feed_part nd_feed_stream = {
    .name = "stream",
    .open = open_rows,
    .alloc = alloc,
    .close = close_rows,
    .scan = scan,
    .normalization_ready = normalization_ready,
    .order_rows = window_rows,
    .held_rows = two_windows,
    .begin_epoch = begin_epoch,
    .batch = batch,
};
