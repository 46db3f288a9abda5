#include "small_batch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/normalize.h"

static nd_status normalize_rows(nd_small_batch *s, nd_error *err) {
    const int rows = s->sh.rows, cols = s->sh.cols;
    double *stats = nd_buffer_alloc_f64(2 * (size_t)cols + 1);
    float *mean = nd_buffer_alloc((size_t)cols), *inv = nd_buffer_alloc((size_t)cols);
    nd_status st = ND_OK;
    if (!stats || !mean || !inv) {
        st = ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate %d feature statistics", cols);
    } else {
        const nd_norm_kind nk = s->cfg.normalize;
        if (nk == ND_NORM_MINMAX) {
            for (size_t j = 0; j < 2 * (size_t)cols; ++j) stats[j] = -INFINITY;
            nd_range_accumulate(stats, s->sh.x, (size_t)rows, cols);
            nd_range_finish(stats, cols, mean, inv);
        } else {
            nd_stats_accumulate(stats, s->sh.x, (size_t)rows, cols);
            nd_stats_finish(stats, cols, nk, mean, inv);
        }
        nd_normalize_apply(s->sh.x, (size_t)rows, cols, mean, inv);
    }
    nd_buffer_free(stats);
    nd_buffer_free(mean);
    nd_buffer_free(inv);
    return st;
}

/* Sets cfg's options from `key = value` lines (a checkpoint's config). */
static nd_status apply_config_text(nd_train_config *cfg, const char *text, nd_error *err) {
    char line[4096 + 256];
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line - 1 ? len : sizeof line - 1), p);
        p += len + (end ? 1 : 0);
        char *hash = strchr(line, '#'), *eq = strchr(line, '=');
        if (hash) *hash = '\0';
        if (!eq || (hash && hash < eq)) continue;
        *eq = '\0';
        char key[128], value[4096 + 128];
        if (sscanf(line, " %127s", key) != 1) continue;
        const char *v = eq + 1;
        while (*v == ' ' || *v == '\t') ++v;
        snprintf(value, sizeof value, "%s", v);
        for (size_t n = strlen(value); n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\r'); --n) value[n - 1] = 0;
        if (!strcmp(key, "config")) continue; /* the file it was read from, if any */
        ND_TRY(nd_cli_set(nd_train_options, nd_train_num_options, cfg, key, value, "the checkpoint's config", err));
    }
    return ND_OK;
}

nd_status nd_small_batch_load(nd_small_batch *s, int argc, char **argv, const char *usage, int rows, const char *base,
                              int *help, nd_error *err) {
    memset(s, 0, sizeof *s);
    if (base) {
        ND_TRY(nd_cli_defaults(nd_train_options, nd_train_num_options, &s->cfg, err));
        ND_TRY(apply_config_text(&s->cfg, base, err));
        ND_TRY(nd_cli_parse(nd_train_options, nd_train_num_options, &s->cfg, argc, argv, help, err));
    } else {
        ND_TRY(nd_train_config_parse(&s->cfg, argc, argv, help, err));
    }
    if (*help) {
        printf("%s\n", usage);
        return ND_OK;
    }
    nd_train_plan plan;
    ND_TRY(nd_train_plan_resolve(&s->cfg, &plan, err));
    s->loss = s->cfg.loss;
    ND_TRY(nd_dataset_probe(s->cfg.data, &s->info, err));
    if (nd_loss_takes_targets(s->loss) != s->info.has_targets)
        return ND_FAIL(err, ND_ERR_ARG, "--loss %s needs %s, %s /train/y has %s", nd_loss_name(s->loss),
                       s->info.has_targets ? "class labels" : "float targets (N x K)", s->cfg.data,
                       s->info.has_targets ? "float targets" : "labels");
    s->k = s->info.num_outputs;
    /* The first block of about `rows` rows is enough. */
    const long parts = s->info.train.rows / rows > 1 ? s->info.train.rows / rows : 1;
    ND_TRY(nd_shard_read_parts(s->cfg.data, "train", 0, 1, (int)(parts > 1 << 20 ? 1 << 20 : parts),
                               s->info.num_classes, &s->sh, err));
    const nd_image_shape image = {s->info.image_c, s->info.image_h, s->info.image_w};
    nd_status st = nd_train_model_spec(&s->cfg, s->sh.cols, image, s->k, &s->spec, err);
    if (st == ND_OK && !base) st = normalize_rows(s, err);
    if (st != ND_OK) nd_small_batch_free(s);
    return st;
}

void nd_small_batch_free(nd_small_batch *s) { nd_shard_free(&s->sh); }

nd_status nd_small_batch_model(const nd_small_batch *s, const nd_model_spec *spec, int rows, nd_model *m,
                               nd_error *err) {
    ND_TRY(nd_model_create(m, spec, rows, err));
    nd_model_init_params(m, s->cfg.seed, s->cfg.init);
    return ND_OK;
}

nd_train_pass nd_small_batch_pass(const nd_small_batch *s) {
    return (nd_train_pass){.seed = s->cfg.seed, .step = 0, .row_ids = NULL};
}

const int *nd_small_batch_labels(const nd_small_batch *s, int first) { return s->sh.y ? s->sh.y + first : NULL; }

const float *nd_small_batch_targets(const nd_small_batch *s, int first) {
    return s->sh.t ? s->sh.t + (size_t)first * s->k : NULL;
}
