#include "feed.h"

#include <string.h>

#include "nndist/augment.h"
#include "train_internal.h"

/* The table: one entry per feed. */
const nd_feed_part *const nd_feed_parts[ND_FEEDS] = {
    [ND_FEED_MEMORY] = &nd_feed_memory,
    [ND_FEED_STREAM] = &nd_feed_stream,
    [ND_FEED_BLOCKS] = &nd_feed_blocks,
};

void nd_feed_gather(nd_trainer *tr, const nd_shard *src, const int *idx, int epoch) {
    const int b = tr->cfg.batch, cols = tr->train.cols, k = tr->info.num_outputs;
    for (int i = 0; i < b; ++i) {
        float *x = tr->xb + (size_t)i * cols;
        memcpy(x, src->x + (size_t)idx[i] * cols, sizeof(float) * cols);
        if (tr->tb) memcpy(tr->tb + (size_t)i * k, src->t + (size_t)idx[i] * k, sizeof(float) * k);
        else tr->yb[i] = src->y[idx[i]];
        tr->row_ids[i] = src->first_row + idx[i];
        if (tr->augment_scratch)
            nd_augment_sample(x, tr->augment_scratch, cols, tr->image, &tr->augment, tr->cfg.seed, epoch,
                              tr->row_ids[i]);
    }
    if (tr->mixup_lam)
        nd_mixup_batch(tr->xb, cols, tr->tb, k, tr->mixup_lam, tr->row_ids, b, tr->augment.mixup, tr->cfg.seed, epoch);
}
