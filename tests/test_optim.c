/* Optimizer steps against independently written references: PyTorch's
 * formulation of momentum and Nesterov (equal to ours for a constant rate),
 * hand-derived values, and a double-precision Adam. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/optim.h"

enum { N = 4, STEPS = 3 };
static const float x0[N] = {1.0f, -2.0f, 0.5f, 0.0f};
static const float grads[STEPS][N] = {{0.5f, -1.0f, 2.0f, 0.0f},
                                      {0.25f, 0.5f, -1.0f, 3.0f},
                                      {-0.5f, 0.0f, 1.0f, -1.0f}};

/* Runs STEPS updates of kind from x0; scale 2 checks grad_scale is applied. */
static void run(nd_opt_kind kind, float lr, float out[N]) {
    nd_opt_config cfg = {.kind = kind,
                         .momentum = 0.9f,
                         .beta1 = 0.9f,
                         .beta2 = 0.999f,
                         .eps = 1e-8f,
                         .rho = 0.9f,
                         .weight_decay = 0.1f};
    nd_optimizer opt;
    nd_error err = {0};
    assert_int_equal(nd_optimizer_create(&opt, &cfg, N, &err), ND_OK);
    memcpy(out, x0, sizeof x0);
    for (int t = 0; t < STEPS; ++t) {
        float g[N];
        for (int i = 0; i < N; ++i) g[i] = grads[t][i] / 2.0f;
        nd_optimizer_step(&opt, out, g, 2.0f, lr);
    }
    assert_int_equal(opt.step, STEPS);
    nd_optimizer_destroy(&opt);
}

static void test_sgd(void **state) {
    (void)state;
    float x[N];
    run(ND_OPT_SGD, 0.1f, x);
    /* x0 - 0.1 * sum of gradients, by hand */
    const double expect[N] = {1.0 - 0.1 * 0.25, -2.0 - 0.1 * -0.5, 0.5 - 0.1 * 2.0, 0.0 - 0.1 * 2.0};
    for (int i = 0; i < N; ++i) assert_float_equal(x[i], expect[i], 1e-6);
}

static void test_momentum_matches_pytorch_form(void **state) {
    (void)state;
    float x[N];
    run(ND_OPT_MOMENTUM, 0.1f, x);
    for (int i = 0; i < N; ++i) {
        double b = 0.0, p = x0[i]; /* torch: b = mu*b + g; p -= lr*b */
        for (int t = 0; t < STEPS; ++t) {
            b = 0.9 * b + grads[t][i];
            p -= 0.1 * b;
        }
        assert_float_equal(x[i], p, 1e-6);
    }
    /* And one value by hand: i=0: b = .5, .7, .13 -> 1 - .1*(.5+.7+.13) = 0.867 */
    assert_float_equal(x[0], 0.867f, 1e-6);
}

static void test_nesterov_matches_pytorch_form(void **state) {
    (void)state;
    float x[N];
    run(ND_OPT_NESTEROV, 0.1f, x);
    for (int i = 0; i < N; ++i) {
        double b = 0.0, p = x0[i]; /* torch: b = mu*b + g; p -= lr*(g + mu*b) */
        for (int t = 0; t < STEPS; ++t) {
            b = 0.9 * b + grads[t][i];
            p -= 0.1 * (grads[t][i] + 0.9 * b);
        }
        assert_float_equal(x[i], p, 1e-6);
    }
}

static void test_adam_bias_correction(void **state) {
    (void)state;
    float x[N];
    run(ND_OPT_ADAM, 0.01f, x);
    for (int i = 0; i < N; ++i) {
        double m = 0, v = 0, p = x0[i];
        for (int t = 1; t <= STEPS; ++t) {
            double g = grads[t - 1][i];
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            p -= 0.01 * (m / (1 - pow(0.9, t))) / (sqrt(v / (1 - pow(0.999, t))) + 1e-8);
        }
        assert_float_equal(x[i], p, 1e-6);
    }
    /* The bias-corrected first step moves every parameter with a non-zero
     * gradient by lr exactly (up to eps): check it on a fresh optimizer. */
    nd_opt_config cfg = {.kind = ND_OPT_ADAM, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    nd_optimizer opt;
    nd_error err = {0};
    assert_int_equal(nd_optimizer_create(&opt, &cfg, N, &err), ND_OK);
    float p[N] = {0, 0, 0, 0};
    nd_optimizer_step(&opt, p, grads[0], 1.0f, 0.01f);
    assert_float_equal(p[0], -0.01f, 1e-7);
    assert_float_equal(p[1], 0.01f, 1e-7);
    assert_float_equal(p[2], -0.01f, 1e-7);
    assert_float_equal(p[3], 0.0f, 0.0);
    nd_optimizer_destroy(&opt);
}

/* References in PyTorch's formulations (torch.optim docs), in double. */
static void test_adagrad_rmsprop_adadelta(void **state) {
    (void)state;
    float xa[N], xr[N], xd[N];
    run(ND_OPT_ADAGRAD, 0.1f, xa);
    run(ND_OPT_RMSPROP, 0.01f, xr);
    run(ND_OPT_ADADELTA, 1.0f, xd);
    for (int i = 0; i < N; ++i) {
        double ca = 0, pa = x0[i];          /* Adagrad: state_sum += g^2; p -= lr g / (sqrt(sum) + eps) */
        double cr = 0, pr = x0[i];          /* RMSprop (alpha = rho) */
        double sq = 0, acc = 0, pd = x0[i]; /* Adadelta */
        for (int t = 0; t < STEPS; ++t) {
            const double g = grads[t][i];
            ca += g * g;
            pa -= 0.1 * g / (sqrt(ca) + 1e-8);
            cr = 0.9 * cr + 0.1 * g * g;
            pr -= 0.01 * g / (sqrt(cr) + 1e-8);
            sq = 0.9 * sq + 0.1 * g * g;
            const double delta = sqrt(acc + 1e-8) / sqrt(sq + 1e-8) * g;
            acc = 0.9 * acc + 0.1 * delta * delta;
            pd -= 1.0 * delta;
        }
        assert_float_equal(xa[i], pa, 1e-6);
        assert_float_equal(xr[i], pr, 1e-5);
        assert_float_equal(xd[i], pd, 1e-6);
    }
    /* By hand: Adagrad's first step moves a non-zero gradient by lr exactly. */
    assert_float_equal(xa[3], 0.0 - 0.1 * (3.0 / 3.0) - 0.1 * (-1.0 / sqrt(10.0)), 1e-6);
}

/* RMSprop with momentum in PyTorch's form (torch.optim.RMSprop, momentum=0.8,
 * centered=False), in double: square_avg = a*sq + (1-a) g^2;
 * buf = mu*buf + g / (sqrt(square_avg) + eps); p -= lr*buf. Without
 * momentum there is no second buffer (old checkpoints have none). */
static void test_rmsprop_momentum(void **state) {
    (void)state;
    nd_opt_config cfg = {.kind = ND_OPT_RMSPROP, .eps = 1e-8f, .rho = 0.9f, .rmsprop_momentum = 0.8f};
    nd_optimizer opt;
    nd_error err = {0};
    assert_int_equal(nd_optimizer_create(&opt, &cfg, N, &err), ND_OK);
    assert_non_null(opt.v);
    assert_float_equal(nd_optimizer_state_floats(&opt), 2.0 * N, 0);
    float x[N];
    memcpy(x, x0, sizeof x0);
    for (int t = 0; t < STEPS; ++t) {
        float g[N];
        for (int i = 0; i < N; ++i) g[i] = grads[t][i] * 4.0f;
        nd_optimizer_step(&opt, x, g, 0.25f, 0.01f);
    }
    nd_optimizer_destroy(&opt);
    for (int i = 0; i < N; ++i) {
        double sq = 0, buf = 0, p = x0[i];
        for (int t = 0; t < STEPS; ++t) {
            const double g = grads[t][i];
            sq = 0.9 * sq + 0.1 * g * g;
            buf = 0.8 * buf + g / (sqrt(sq) + 1e-8);
            p -= 0.01 * buf;
        }
        assert_float_equal(x[i], p, 1e-5);
    }
    /* By hand, i = 0 step 1: sq = 0.1*0.25, buf = 0.5/sqrt(0.025) = sqrt(10). */
    cfg.rmsprop_momentum = 0.0f;
    assert_int_equal(nd_optimizer_create(&opt, &cfg, N, &err), ND_OK);
    assert_null(opt.v);
    nd_optimizer_destroy(&opt);
    cfg.rmsprop_momentum = 0.8f;
    assert_int_equal(nd_optimizer_create(&opt, &cfg, N, &err), ND_OK);
    float p[N] = {0, 0, 0, 0};
    nd_optimizer_step(&opt, p, grads[0], 1.0f, 0.01f);
    assert_float_equal(p[0], -0.01 * sqrt(10.0), 1e-6);
    /* Step 2 (g = 0.25): sq = 0.9*0.025 + 0.1*0.0625 = 0.02875; the old
     * velocity carries 0.8 of the first step. */
    nd_optimizer_step(&opt, p, grads[1], 1.0f, 0.01f);
    assert_float_equal(p[0], -0.01 * sqrt(10.0) - 0.01 * (0.8 * sqrt(10.0) + 0.25 / sqrt(0.02875)), 1e-6);
    nd_optimizer_destroy(&opt);
}

static void test_adamw_decays_only_masked(void **state) {
    (void)state;
    nd_opt_config cfg = {.kind = ND_OPT_ADAMW, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f};
    nd_optimizer opt;
    nd_error err = {0};
    assert_int_equal(nd_optimizer_create(&opt, &cfg, N, &err), ND_OK);
    const float mask[N] = {1, 1, 0, 0};
    opt.decay_mask = mask;
    float x[N];
    memcpy(x, x0, sizeof x0);
    for (int t = 0; t < STEPS; ++t) nd_optimizer_step(&opt, x, grads[t], 1.0f, 0.01f);
    nd_optimizer_destroy(&opt);
    for (int i = 0; i < N; ++i) {
        double m = 0, v = 0, p = x0[i];
        for (int t = 1; t <= STEPS; ++t) {
            const double g = grads[t - 1][i];
            if (mask[i] != 0.0f) p *= 1.0 - 0.01 * 0.1; /* torch: p.mul_(1 - lr * weight_decay) */
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            p -= 0.01 * (m / (1 - pow(0.9, t))) / (sqrt(v / (1 - pow(0.999, t))) + 1e-8);
        }
        assert_float_equal(x[i], p, 1e-6);
    }
    /* i = 3 has a zero first gradient and no decay: plain Adam there. */
}

static void test_parse_names(void **state) {
    (void)state;
    nd_opt_kind k;
    assert_int_equal(nd_opt_parse("nesterov", &k), 0);
    assert_int_equal(k, ND_OPT_NESTEROV);
    assert_int_equal(nd_opt_parse("adamw", &k), 0);
    assert_int_equal(k, ND_OPT_ADAMW);
    assert_int_equal(nd_opt_parse("adamax", &k), -1);
    assert_string_equal(nd_opt_name(ND_OPT_ADAM), "adam");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_momentum_matches_pytorch_form),
        cmocka_unit_test(test_nesterov_matches_pytorch_form),
        cmocka_unit_test(test_adam_bias_correction),
        cmocka_unit_test(test_adagrad_rmsprop_adadelta),
        cmocka_unit_test(test_rmsprop_momentum),
        cmocka_unit_test(test_adamw_decays_only_masked),
        cmocka_unit_test(test_parse_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
