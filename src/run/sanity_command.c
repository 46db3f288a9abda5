/* `nndist sanity`: the checks to run before a long training job (CS231n,
 * "Neural Networks Part 3"), on rank 0 with a few hundred training rows:
 *   1. the initial softmax loss is within 50% of ln(C) (no class favoured
 *      yet; He-initialized nets start a little above it, a broken loss,
 *      unscaled input or wrong labels far above);
 *   2. adding an L2 penalty raises the loss;
 *   3. the model can overfit 20 examples to a loss near zero.
 * Prints PASS/FAIL per check; fails (exit 1) if any check fails. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/commands.h"
#include "nndist/data.h"
#include "nndist/loss.h"
#include "nndist/model.h"
#include "nndist/normalize.h"
#include "nndist/optim.h"
#include "nndist/train.h"

enum { SANITY_ROWS = 256, OVERFIT_ROWS = 20, OVERFIT_STEPS = 1000 };

static double mean_loss(nd_model *m, const float *x, const int *y, int rows, int classes) {
    const float *logits = nd_model_forward(m, x, rows);
    return nd_softmax_ce(NULL, logits, y, rows, classes).loss_sum / rows;
}

static int report(int pass, const char *what) {
    printf("%s  %s\n", pass ? "PASS" : "FAIL", what);
    return pass;
}

nd_status nd_cmd_sanity(int argc, char **argv, nd_error *err) {
    nd_train_config c;
    int help = 0;
    ND_TRY(nd_train_config_parse(&c, argc, argv, &help, err));
    if (help) {
        printf("usage: nndist sanity --data FILE [train options]   (checks before training, see README)\n");
        return ND_OK;
    }
    ND_TRY(nd_train_config_validate(&c, err));
    nd_dataset_info info;
    ND_TRY(nd_dataset_probe(c.data, &info, err));
    /* The first block of about SANITY_ROWS rows is enough. */
    const long parts = info.train.rows / SANITY_ROWS > 1 ? info.train.rows / SANITY_ROWS : 1;
    nd_shard sh;
    ND_TRY(nd_shard_read_parts(c.data, "train", 0, 1, (int)(parts > 1 << 20 ? 1 << 20 : parts), info.num_classes, &sh, err));
    const int rows = sh.rows, cols = sh.cols, k = info.num_classes;
    nd_model_spec spec = {.input_dim = cols, .num_classes = k};
    spec.num_hidden = nd_parse_widths(c.hidden, spec.hidden, ND_MAX_LAYERS - 1);
    nd_activation_parse(c.act, &spec.act.kind);
    spec.act.alpha = c.leaky_alpha;
    nd_model m;
    nd_optimizer opt;
    memset(&opt, 0, sizeof opt);
    nd_status st = nd_model_create(&m, &spec, rows, err);
    if (st != ND_OK) {
        nd_shard_free(&sh);
        return st;
    }
    /* Normalize the block with its own statistics, as --normalize says. */
    double *stats = nd_buffer_alloc_f64(2 * (size_t)cols + 1);
    float *mean = nd_buffer_alloc((size_t)cols), *inv = nd_buffer_alloc((size_t)cols);
    if (!stats || !mean || !inv) st = ND_FAIL(err, ND_ERR_NOMEM, "sanity: cannot allocate %d feature statistics", cols);
    if (st == ND_OK) {
        nd_norm_kind nk;
        nd_norm_parse(c.normalize, &nk);
        if (nk == ND_NORM_MINMAX) {
            for (size_t j = 0; j < 2 * (size_t)cols; ++j) stats[j] = -INFINITY;
            nd_range_accumulate(stats, sh.x, (size_t)rows, cols);
            nd_range_finish(stats, cols, mean, inv);
        } else {
            nd_stats_accumulate(stats, sh.x, (size_t)rows, cols);
            nd_stats_finish(stats, cols, nk, mean, inv);
        }
        nd_normalize_apply(sh.x, (size_t)rows, cols, mean, inv);
    }
    nd_buffer_free(stats);
    nd_buffer_free(mean);
    nd_buffer_free(inv);
    if (st != ND_OK) {
        nd_model_destroy(&m);
        nd_shard_free(&sh);
        return st;
    }
    nd_init_kind init;
    nd_init_parse(c.init, &init);
    nd_model_init_params(&m, c.seed, init);
    int passed = 0;
    char line[256];

    /* 1. Initial loss. */
    const double l0 = mean_loss(&m, sh.x, sh.y, rows, k), expect = log((double)k);
    snprintf(line, sizeof line, "initial loss %.4f, expected about ln(%d) = %.4f (within 50%%)", l0, k, expect);
    passed += report(fabs(l0 - expect) < 0.5 * expect, line);

    /* 2. Regularization raises the loss: data loss + 0.5 * lambda * |W|^2. */
    double w2 = 0.0;
    for (int l = 0; l < m.num_layers; ++l)
        for (size_t i = 0; i < m.layer[l].w.length; ++i) w2 += (double)m.param[m.layer[l].w.offset + i] * m.param[m.layer[l].w.offset + i];
    const double lam = c.weight_decay > 0 ? c.weight_decay : 1e-3;
    snprintf(line, sizeof line, "L2 penalty %.1e raises the loss: %.4f -> %.4f", lam, l0, l0 + 0.5 * lam * w2);
    passed += report(l0 + 0.5 * lam * w2 > l0, line);

    /* 3. Overfit 20 examples with the configured optimizer and rate. */
    const int n20 = rows < OVERFIT_ROWS ? rows : OVERFIT_ROWS;
    nd_opt_config oc = {.momentum = c.momentum, .beta1 = c.beta1, .beta2 = c.beta2, .eps = c.eps, .rho = c.rho};
    nd_opt_parse(c.opt, &oc.kind);
    st = nd_optimizer_create(&opt, &oc, m.num_params, err);
    double last = NAN;
    int steps = 0;
    for (; st == ND_OK && steps < OVERFIT_STEPS; ++steps) {
        const float *logits = nd_model_forward(&m, sh.x, n20);
        nd_model_zero_grad(&m);
        last = nd_softmax_ce(nd_model_output_grad(&m), logits, sh.y, n20, k).loss_sum / n20;
        if (last < 0.01) break;
        nd_model_backward(&m, sh.x, n20);
        nd_optimizer_step(&opt, m.param, m.grad, 1.0f / n20, c.lr);
    }
    if (st == ND_OK) {
        snprintf(line, sizeof line, "overfits %d examples: loss %.4g after %d steps (--opt %s --lr %g; want < 0.01)", n20,
                 last, steps, c.opt, (double)c.lr);
        passed += report(last < 0.01, line);
        printf("%d of 3 checks passed\n", passed);
        if (passed != 3) st = ND_FAIL(err, ND_ERR_DATA, "sanity: %d of 3 checks failed", 3 - passed);
    }
    nd_optimizer_destroy(&opt);
    nd_model_destroy(&m);
    nd_shard_free(&sh);
    return st;
}
