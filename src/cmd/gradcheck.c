/* `nndist gradcheck`: the configured network's backprop against centred
 * differences in double precision on a few training rows, every parameter
 * group sampled, dropout masks fixed by the seed, the penalties checked
 * apart from the data loss. Exits non-zero above the threshold. */
#include <math.h>
#include <stdio.h>

#include "nndist/commands.h"
#include "nndist/gradcheck.h"
#include "nndist/rng.h"
#include "small_batch.h"

/* A convolutional net's double-precision reference is direct loops over
 * every pixel: fewer rows and samples keep it to seconds. */
enum { CHECK_ROWS = 8, SAMPLES_PER_GROUP = 40, CONV_ROWS = 2, CONV_SAMPLES_PER_GROUP = 12 };
#define STEP 1e-5
static const char *verdict(double e) {
    return e < 1e-7                    ? "excellent"
        : e < 1e-4                     ? "ok"
        : e <= ND_GRADCHECK_FAIL_ABOVE ? "ok for float32"
        : e < 1e-2                     ? "uncomfortable"
                                       : "WRONG";
}

nd_status nd_cmd_gradcheck(int argc, char **argv, nd_error *err) {
    nd_small_batch s;
    int help = 0;
    ND_TRY(nd_small_batch_load(&s, argc, argv,
                               "usage: nndist gradcheck --data FILE [train options]   (see docs/training.md)",
                               CHECK_ROWS, &help, err));
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
    /* Seeded biases and batch-norm scale/shift away from their start (0, 1,
     * 0), so units do not sit together at a kink and every group's gradient
     * is generic rather than at a symmetric point. */
    nd_model_jitter(&m, s.cfg.seed, 0.2f);
    const nd_train_pass pass = nd_small_batch_pass(&s);
    nd_model_zero_grad(&m);
    const float *out = nd_model_forward(&m, s.sh.x, rows, &pass);
    nd_loss_apply(s.loss, nd_model_output_grad(&m), out, nd_small_batch_labels(&s, 0), nd_small_batch_targets(&s, 0),
                  rows, s.k);
    nd_model_backward(&m, s.sh.x, rows);
    nd_gradcheck_group groups[ND_GRADCHECK_MAX_GROUPS];
    const int n = nd_gradcheck_run(&m, m.grad, s.sh.x, rows, s.loss, nd_small_batch_labels(&s, 0),
                                   nd_small_batch_targets(&s, 0), samples, s.cfg.seed, STEP,
                                   s.cfg.weight_decay > 0 ? s.cfg.weight_decay : 1e-3, s.cfg.l1 > 0 ? s.cfg.l1 : 1e-3,
                                   groups);
    char arch[512];
    nd_arch_format(&m.spec, arch, sizeof arch);
    printf("gradcheck %s, loss %s, %d rows, h = %g, relative error |a-n|/max(|a|,|n|)\n", arch,
           nd_loss_name(s.cfg.loss), rows, STEP);
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
