/* For tests/test_export_torch.py: nndist's own logits of a checkpoint on a
 * split, row by row (what `nndist eval` computes, which prints only the
 * totals), so that the script can compare them with the exported PyTorch
 * module's.
 *   test_export_logits CKPT DATA SPLIT OUT
 * OUT: float32 logits (rows x classes), row-major. Prints "rows R classes K
 * accuracy A". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/checkpoint.h"
#include "nndist/data.h"
#include "nndist/normalize.h"

static int fail(const nd_error *err) {
    fprintf(stderr, "test_export_logits: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: test_export_logits CKPT DATA SPLIT OUT\n");
        return 2;
    }
    nd_error err = {0};
    nd_ckpt_info info;
    if (nd_checkpoint_probe(argv[1], &info, &err) != ND_OK) return fail(&err);
    nd_model model;
    const int chunk = 128, k = info.spec.num_classes, cols = info.spec.input_dim;
    if (nd_model_create(&model, &info.spec, chunk, &err) != ND_OK) return fail(&err);
    float *mean = nd_buffer_alloc((size_t)cols), *inv_std = nd_buffer_alloc((size_t)cols);
    if (!mean || !inv_std) return 2;
    if (nd_checkpoint_read(argv[1], &model, NULL, mean, inv_std, NULL, &info, &err) != ND_OK) return fail(&err);
    nd_shard shard;
    memset(&shard, 0, sizeof shard);
    if (nd_shard_read(argv[2], argv[3], 0, 1, k, &shard, &err) != ND_OK) return fail(&err);
    nd_normalize_apply(shard.x, (size_t)shard.rows, cols, mean, inv_std);
    FILE *out = fopen(argv[4], "wb");
    if (!out) return 2;
    long hits = 0;
    for (int off = 0; off < shard.rows; off += chunk) { /* as nndist eval, in chunks of a convolutional net's size */
        const int nb = shard.rows - off < chunk ? shard.rows - off : chunk;
        const float *logits = nd_model_forward(&model, shard.x + (size_t)off * cols, nb, NULL);
        if (fwrite(logits, sizeof(float), (size_t)nb * k, out) != (size_t)nb * k) return 2;
        for (int i = 0; i < nb; ++i) {
            int arg = 0;
            for (int j = 1; j < k; ++j)
                if (logits[(size_t)i * k + j] > logits[(size_t)i * k + arg]) arg = j;
            hits += arg == shard.y[off + i];
        }
    }
    if (fclose(out) != 0) return 2;
    printf("rows %d classes %d accuracy %.6f\n", shard.rows, k, shard.rows ? (double)hits / shard.rows : 0.0);
    nd_shard_free(&shard);
    nd_model_destroy(&model);
    nd_buffer_free(mean);
    nd_buffer_free(inv_std);
    return 0;
}
