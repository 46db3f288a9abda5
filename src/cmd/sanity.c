/* `nndist sanity`: the checks to run before a long training job (CS231n,
 * "Neural Networks Part 3"), on rank 0 with a few hundred training rows:
 *   1. the initial loss is within 50% of its expected value: ln C for
 *      softmax, C - 1 for the hinge losses, K ln 2 for sigmoid BCE, and the
 *      loss of predicting 0 for regression (a broken loss, unscaled input or
 *      wrong labels land far from it);
 *   2. adding an L2 penalty (and --l1) raises the loss, by the penalty the
 *      trainer's own gradient code implies, which must equal its closed form;
 *   3. the model, without dropout, can overfit 20 examples to a loss near
 *      zero with the configured optimizer and rate.
 * Prints PASS/FAIL per check; fails (exit 1) if any check fails. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nndist/commands.h"
#include "nndist/arena.h"
#include "nndist/optim.h"
#include "nndist/regularize.h"
#include "small_batch.h"

enum { SANITY_ROWS = 256, OVERFIT_ROWS = 20, OVERFIT_STEPS = 1000 };

static int report(int pass, const char *what) {
    printf("%s  %s\n", pass ? "PASS" : "FAIL", what);
    return pass;
}

/* Mean loss of rows [0, n) on a training pass; with grad, backward too. */
static double mean_loss(nd_model *m, const nd_small_batch *s, int n, int backward) {
    const nd_train_pass pass = nd_small_batch_pass(s);
    nd_model_zero_grad(m);
    const float *out = nd_model_forward(m, s->sh.x, n, &pass);
    const double l = nd_loss_apply(s->loss, backward ? nd_model_output_grad(m) : NULL, out, nd_small_batch_labels(s, 0),
                                   nd_small_batch_targets(s, 0), n, s->k)
                         .loss_sum /
        n;
    if (backward) nd_model_backward(m, s->sh.x, n);
    return l;
}

/* The trainer's penalty gradient at w, for nd_reg_value_from_gradient. */
typedef struct {
    const nd_train_config *cfg;
    float weight_decay;
    nd_model *m;
} trainer_penalty;

static void trainer_penalty_gradient(void *ctx, const float *w, float *g) {
    trainer_penalty *t = ctx;
    memcpy(t->m->param, w, sizeof(float) * t->m->num_params);
    memset(t->m->grad, 0, sizeof(float) * t->m->num_params);
    nd_train_penalty_gradient(t->cfg, t->weight_decay, t->m);
    memcpy(g, t->m->grad, sizeof(float) * t->m->num_params);
}

/* The penalties' closed form, 0.5 wd |w|^2 + l1 |w|_1 over the weights
 * (and biases with --regularize-bias), to hold the trainer's against. */
static double closed_penalty(const nd_model *m, const nd_train_config *cfg, double wd) {
    double sum = 0.0;
    for (int t = 0; t < m->num_tensors; ++t) {
        const nd_tensor *T = &m->tensor[t];
        if (T->role != ND_TENSOR_WEIGHT && !(T->role == ND_TENSOR_BIAS && cfg->regularize_bias)) continue;
        for (size_t i = 0; i < T->span.length; ++i) {
            const double w = m->param[T->span.offset + i];
            sum += 0.5 * wd * w * w + cfg->l1 * fabs(w);
        }
    }
    return sum;
}

/* The loss of all-zero outputs: what an untrained network should be near. */
static double expected_initial(const nd_small_batch *s) {
    const double e = nd_loss_expected_initial(s->loss, s->k);
    if (!isnan(e)) return e;
    double sum = 0.0;
    for (size_t i = 0; i < (size_t)s->sh.rows * s->k; ++i)
        sum += s->loss == ND_LOSS_L1 ? fabs(s->sh.t[i]) : (double)s->sh.t[i] * s->sh.t[i];
    return sum / s->sh.rows;
}

nd_status nd_cmd_sanity(int argc, char **argv, nd_error *err) {
    nd_small_batch s;
    int help = 0;
    ND_TRY(nd_small_batch_load(&s, argc, argv,
                               "usage: nndist sanity --data FILE [train options]   (see docs/training.md)", SANITY_ROWS,
                               NULL, &help, err));
    if (help) return ND_OK;
    if (s.cfg.opt == ND_OPT_LBFGS) {
        nd_small_batch_free(&s);
        return ND_FAIL(err, ND_ERR_ARG, "sanity: --opt lbfgs: not here (the overfit check takes minibatch steps)");
    }
    nd_model m;
    nd_optimizer opt;
    memset(&opt, 0, sizeof opt);
    nd_status st = nd_small_batch_model(&s, &s.spec, s.sh.rows, &m, err);
    if (st != ND_OK) {
        nd_small_batch_free(&s);
        return st;
    }
    int passed = 0;
    char line[256];

    /* 1. Initial loss. */
    const double l0 = mean_loss(&m, &s, s.sh.rows, 0), expect = expected_initial(&s);
    snprintf(line, sizeof line, "initial %s loss %.4f, expected about %.4f (within 50%%)", nd_loss_name(s.cfg.loss), l0,
             expect);
    passed += report(fabs(l0 - expect) < 0.5 * expect, line);

    /* 2. Regularization raises the loss by what it should: the penalty as
     * the trainer applies it (its gradient code, integrated from w = 0)
     * against the closed form. A sign, factor or coverage bug fails. */
    const double lam = s.cfg.weight_decay > 0 ? s.cfg.weight_decay : 1e-3;
    float *scratch = nd_buffer_alloc(3 * m.num_params);
    if (!scratch) {
        nd_model_destroy(&m);
        nd_small_batch_free(&s);
        return ND_FAIL(err, ND_ERR_NOMEM, "sanity: cannot allocate %zu floats", 3 * m.num_params);
    }
    float *w = scratch + 2 * m.num_params;
    memcpy(w, m.param, sizeof(float) * m.num_params);
    trainer_penalty tp = {&s.cfg, (float)lam, &m};
    const double pen = nd_reg_value_from_gradient(trainer_penalty_gradient, &tp, w, m.num_params, scratch);
    memcpy(m.param, w, sizeof(float) * m.num_params);
    nd_buffer_free(scratch);
    const double closed = closed_penalty(&m, &s.cfg, lam);
    snprintf(line, sizeof line, "L2 %.1e%s raises the loss: %.4f -> %.4f (trainer's penalty %.6g, closed form %.6g)",
             lam, s.cfg.l1 > 0 ? " + L1" : "", l0, l0 + pen, pen, closed);
    passed += report(pen > 0 && fabs(pen - closed) <= 1e-4 * closed, line);

    /* 3. Overfit 20 examples, regularization off (CS231n): no dropout. */
    nd_model_destroy(&m);
    nd_model_spec plain = s.spec;
    plain.input_drop = 0.0f;
    for (int l = 0; l < plain.num_hidden; ++l) plain.hidden[l].drop = 0.0f;
    const int n20 = s.sh.rows < OVERFIT_ROWS ? s.sh.rows : OVERFIT_ROWS;
    st = nd_small_batch_model(&s, &plain, n20, &m, err);
    nd_opt_config oc = {.momentum = s.cfg.momentum,
                        .beta1 = s.cfg.beta1,
                        .beta2 = s.cfg.beta2,
                        .eps = s.cfg.eps,
                        .rho = s.cfg.rho,
                        .rmsprop_momentum = s.cfg.rmsprop_momentum};
    oc.kind = s.cfg.opt;
    if (st == ND_OK) st = nd_optimizer_create(&opt, &oc, m.num_params, err);
    double last = NAN;
    int steps = 0;
    for (; st == ND_OK && steps < OVERFIT_STEPS; ++steps) {
        last = mean_loss(&m, &s, n20, 1);
        if (last < 0.01) break;
        nd_model_running_deltas(&m, m.param, m.grad, n20, s.cfg.bn_momentum);
        nd_model_apply_running(&m, m.param, m.grad, 0, m.num_params);
        nd_optimizer_step(&opt, m.param, m.grad, 1.0f / n20, s.cfg.lr);
    }
    if (st == ND_OK) {
        snprintf(line, sizeof line, "overfits %d examples: loss %.4g after %d steps (--opt %s --lr %g; want < 0.01)",
                 n20, last, steps, nd_opt_name(s.cfg.opt), (double)s.cfg.lr);
        passed += report(last < 0.01, line);
        printf("%d of 3 checks passed\n", passed);
        if (passed != 3) st = ND_FAIL(err, ND_ERR_DATA, "sanity: %d of 3 checks failed", 3 - passed);
    }
    nd_optimizer_destroy(&opt);
    nd_model_destroy(&m);
    nd_small_batch_free(&s);
    return st;
}
