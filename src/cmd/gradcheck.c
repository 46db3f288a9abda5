/* `nndist gradcheck`: the configured network's backprop against centred
 * differences in double precision on a few training rows, every parameter
 * group sampled, dropout masks fixed by the seed, the penalties checked
 * apart from the data loss. Exits non-zero above the threshold. --h sets
 * the step, --verbose prints every sampled value, --checkpoint FILE checks
 * at a run's weights (its configuration and statistics too). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/checkpoint.h"

#include "nndist/commands.h"
#include "nndist/gradcheck.h"
#include "nndist/rng.h"
#include "small_batch.h"

/* A convolutional net's double-precision reference is direct loops over
 * every pixel: fewer rows and samples keep it to seconds. */
enum { CHECK_ROWS = 8, SAMPLES_PER_GROUP = 40, CONV_ROWS = 2, CONV_SAMPLES_PER_GROUP = 12 };
#define DEFAULT_STEP 1e-5
static const char *verdict(double e) {
    return e < 1e-7                    ? "excellent"
        : e < 1e-4                     ? "ok"
        : e <= ND_GRADCHECK_FAIL_ABOVE ? "ok for float32"
        : e < 1e-2                     ? "uncomfortable"
                                       : "WRONG";
}

/* Takes "--name V" / "--name=V" (value) or "--name" (flag: value NULL,
 * returns "") out of argv; NULL when absent. */
static const char *take(int *argc, char **argv, const char *name, int flag) {
    const size_t len = strlen(name);
    for (int i = 0; i < *argc; ++i) {
        if (strncmp(argv[i], name, len)) continue;
        const char *value = NULL;
        int used = 0;
        if (flag && argv[i][len] == '\0') value = "", used = 1;
        else if (!flag && argv[i][len] == '=') value = argv[i] + len + 1, used = 1;
        else if (!flag && argv[i][len] == '\0' && i + 1 < *argc) value = argv[i + 1], used = 2;
        else continue;
        memmove(argv + i, argv + i + used, sizeof(char *) * (size_t)(*argc - i - used));
        *argc -= used;
        return value;
    }
    return NULL;
}

/* Reads the checkpoint's weights into m and normalizes s's rows with its
 * statistics (the gradient where a run stood after its burn-in). */
static nd_status load_checkpoint(const char *path, nd_ckpt_info *info, nd_model *m, nd_small_batch *s, nd_error *err) {
    const int cols = s->sh.cols;
    float *mean = nd_buffer_alloc((size_t)cols), *inv_std = nd_buffer_alloc((size_t)cols);
    nd_status st = mean && inv_std ? nd_checkpoint_read(path, m, NULL, mean, inv_std, NULL, info, err)
                                   : ND_FAIL(err, ND_ERR_NOMEM, "gradcheck: cannot allocate %d statistics", cols);
    if (st == ND_OK) nd_normalize_apply(s->sh.x, (size_t)s->sh.rows, cols, mean, inv_std);
    nd_buffer_free(mean);
    nd_buffer_free(inv_std);
    return st;
}

nd_status nd_cmd_gradcheck(int argc, char **argv, nd_error *err) {
    const char *ckpt = take(&argc, argv, "--checkpoint", 0), *h_text = take(&argc, argv, "--h", 0);
    const int verbose = take(&argc, argv, "--verbose", 1) != NULL;
    double h = DEFAULT_STEP;
    if (h_text) {
        char *end;
        h = strtod(h_text, &end);
        if (end == h_text || *end || !(h > 0.0 && h <= 0.1))
            return ND_FAIL(err, ND_ERR_ARG, "--h: '%s' must be a step in (0, 0.1]", h_text);
    }
    static nd_ckpt_info info; /* a checkpoint's configuration is 8 KB of text */
    memset(&info, 0, sizeof info);
    if (ckpt) ND_TRY(nd_checkpoint_probe(ckpt, &info, err));
    nd_small_batch s;
    int help = 0;
    ND_TRY(nd_small_batch_load(&s, argc, argv,
                               "usage: nndist gradcheck --data FILE [--h 1e-5] [--verbose] [--checkpoint FILE] "
                               "[train options]   (see docs/training.md)",
                               CHECK_ROWS, ckpt ? info.meta.config : NULL, &help, err));
    if (help) return ND_OK;
    const int conv = nd_spec_is_convolutional(&s.spec);
    const int want = conv ? CONV_ROWS : CHECK_ROWS, samples = conv ? CONV_SAMPLES_PER_GROUP : SAMPLES_PER_GROUP;
    const int rows = s.sh.rows < want ? s.sh.rows : want;
    nd_model m;
    nd_status st = nd_small_batch_model(&s, &s.spec, rows, &m, err);
    if (st != ND_OK) {
        nd_small_batch_free(&s);
        return st;
    }
    if (ckpt) {
        st = load_checkpoint(ckpt, &info, &m, &s, err);
        if (st != ND_OK) {
            nd_model_destroy(&m);
            nd_small_batch_free(&s);
            return st;
        }
    } else {
        /* Seeded biases and batch-norm scale/shift away from their start (0,
         * 1, 0), so units do not sit together at a kink and every group's
         * gradient is generic rather than at a symmetric point. */
        nd_model_jitter(&m, s.cfg.seed, 0.2f);
    }
    const nd_train_pass pass = nd_small_batch_pass(&s);
    nd_model_zero_grad(&m);
    const float *out = nd_model_forward(&m, s.sh.x, rows, &pass);
    nd_loss_apply(s.loss, nd_model_output_grad(&m), out, nd_small_batch_labels(&s, 0), nd_small_batch_targets(&s, 0),
                  rows, s.k);
    nd_model_backward(&m, s.sh.x, rows);
    char arch[512];
    nd_arch_format(&m.spec, arch, sizeof arch);
    printf("gradcheck %s, loss %s, %d rows, h = %g, relative error |a-n|/max(|a|,|n|)\n", arch,
           nd_loss_name(s.cfg.loss), rows, h);
    if (ckpt) printf("  at the weights of %s (step %ld, epoch %d)\n", ckpt, info.meta.step, info.meta.epoch);
    if (verbose) printf("  every sampled parameter: group [index]  analytic  numeric  relative error\n");
    fflush(stdout);
    nd_gradcheck_group groups[ND_GRADCHECK_MAX_GROUPS];
    const int n = nd_gradcheck_run_log(&m, m.grad, s.sh.x, rows, s.loss, nd_small_batch_labels(&s, 0),
                                       nd_small_batch_targets(&s, 0), samples, s.cfg.seed, h,
                                       s.cfg.weight_decay > 0 ? s.cfg.weight_decay : 1e-3,
                                       s.cfg.l1 > 0 ? s.cfg.l1 : 1e-3, groups, verbose ? stdout : NULL);
    double worst = 0.0;
    for (int g = 0; g < n; ++g) {
        printf("  %-14s %3d checked  max rel error %.2e  %-15s", groups[g].name, groups[g].checked, groups[g].max_rel,
               verdict(groups[g].max_rel));
        if (groups[g].kinks) printf(" (%d skipped: a kink within h)", groups[g].kinks);
        printf("\n");
        worst = fmax(worst, groups[g].max_rel);
    }
    printf("worst %.2e: %s (fails above %.0e)\n", worst, worst <= ND_GRADCHECK_FAIL_ABOVE ? "PASS" : "FAIL",
           ND_GRADCHECK_FAIL_ABOVE);
    if (n == 0) st = ND_FAIL(err, ND_ERR_NOMEM, "gradcheck: cannot allocate the double-precision parameters");
    else if (!(worst <= ND_GRADCHECK_FAIL_ABOVE))
        st = ND_FAIL(err, ND_ERR_DATA, "gradcheck: relative error %.2e exceeds %.0e", worst, ND_GRADCHECK_FAIL_ABOVE);
    nd_model_destroy(&m);
    nd_small_batch_free(&s);
    return st;
}
