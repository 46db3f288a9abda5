/* Learning-rate scaling and warmup, clipping by value and by global norm. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/sched.h"

static void test_linear_scaling(void **state) {
    (void)state;
    nd_lr_schedule s = {.base_lr = 0.01f, .ref_batch = 64, .global_batch = 256}; /* 4 ranks of 64 */
    assert_float_equal(nd_lr_peak(&s), 0.04f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 0), 0.04f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 1000), 0.04f, 1e-8);
    nd_lr_schedule ref = {.base_lr = 0.1f,
                          .ref_batch = 256,
                          .global_batch = 64}; /* a larger batch's rate scales down */
    assert_float_equal(nd_lr_peak(&ref), 0.025f, 1e-8);
}

/* The default warmup starts from zero without wasting a step: (s+1)/W of the
 * target; --warmup-start F from F of it; --warmup-goyal from --lr, exactly
 * the rates the warmup had before it could start anywhere else. */
static void test_warmup(void **state) {
    (void)state;
    nd_lr_schedule s = {.base_lr = 0.01f, .ref_batch = 64, .global_batch = 128, .warmup_steps = 10};
    assert_float_equal(nd_lr_at(&s, 0), 0.002f, 1e-9); /* 1/10 of the peak, not 0 */
    assert_float_equal(nd_lr_at(&s, 4), 0.01f, 1e-9);  /* half way */
    assert_float_equal(nd_lr_at(&s, 9), 0.02f, 1e-9);  /* the last warmup step reaches the peak */
    assert_float_equal(nd_lr_at(&s, 10), 0.02f, 1e-9);
    for (long t = 1; t < 10; ++t) assert_true(nd_lr_at(&s, t) > nd_lr_at(&s, t - 1));
    s.warmup_start = 0.5f; /* from half of the peak */
    assert_float_equal(nd_lr_at(&s, 0), 0.02 * (0.5 + 0.5 * 0.1), 1e-9);
    assert_float_equal(nd_lr_at(&s, 9), 0.02f, 1e-9);
    s.warmup_start = 0.0f;
    s.warmup_goyal = 1;
    for (long t = 0; t < 12; ++t) { /* the old formula, bit for bit */
        const double peak = nd_lr_peak(&s);
        const float old = t < 10 ? (float)(s.base_lr + (peak - s.base_lr) * (double)t / 10.0) : (float)peak;
        assert_true(nd_lr_at(&s, t) == old);
    }
    assert_float_equal(nd_lr_at(&s, 0), 0.01f, 1e-9); /* starts at the unscaled rate */
    assert_float_equal(nd_lr_at(&s, 5), 0.015f, 1e-9);
}

/* The warmup ramps up to the schedule's rate at step W, and the schedule
 * runs on the steps after it; one-cycle included. */
static nd_lr_schedule base(nd_sched_kind kind);
#define PI 3.141592653589793
static void test_warmup_composes(void **state) {
    (void)state;
    const nd_sched_kind kinds[] = {ND_SCHED_CONSTANT, ND_SCHED_COSINE, ND_SCHED_ONECYCLE, ND_SCHED_SGDR,
                                   ND_SCHED_LINEAR,   ND_SCHED_EXP,    ND_SCHED_GBC,      ND_SCHED_PLATEAU};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; ++i) {
        nd_lr_schedule plain = base(kinds[i]), warm = base(kinds[i]);
        plain.total_steps = 900; /* the schedule over the steps after a warmup of 100 */
        warm.warmup_steps = 100;
        const double target = nd_lr_at(&plain, 0);
        for (long t = 0; t < 100; ++t) assert_float_equal(nd_lr_at(&warm, t), target * (t + 1) / 100.0, 1e-8);
        for (long t = 100; t < 1000; t += 37) assert_true(nd_lr_at(&warm, t) == nd_lr_at(&plain, t - 100));
    }
    nd_lr_schedule oc = base(ND_SCHED_ONECYCLE); /* one-cycle's start is peak/div: the warmup goes there */
    oc.warmup_steps = 50;
    assert_float_equal(nd_lr_at(&oc, 49), 0.004f, 1e-9);
    assert_float_equal(nd_lr_at(&oc, 50 + 285), 0.1f, 1e-7); /* the top: 30% of the 950 after the warmup */
    nd_lr_schedule co = base(ND_SCHED_COSINE);
    co.warmup_steps = 100;
    co.warmup_goyal = 1;
    co.global_batch = 64; /* peak 0.2: Goyal from 0.1 up to it, then the cosine */
    assert_float_equal(nd_lr_at(&co, 0), 0.1f, 1e-8);
    assert_float_equal(nd_lr_at(&co, 50), 0.15f, 1e-8);
    assert_float_equal(nd_lr_at(&co, 100), 0.2f, 1e-8);
    assert_float_equal(nd_lr_at(&co, 550), 0.001 + (0.2 - 0.001) * (1 + cos(PI * 0.5)) / 2, 1e-7);
}

/* A warmup that changes nothing, or outlasts the run, is named. */
static void test_warmup_issues(void **state) {
    (void)state;
    char why[256];
    nd_lr_schedule s = base(ND_SCHED_CONSTANT);
    assert_int_equal(nd_lr_warmup_issue(&s, why, sizeof why), 0); /* no warmup at all */
    s.warmup_steps = 100;
    assert_int_equal(nd_lr_warmup_issue(&s, why, sizeof why), 0); /* from 0: it ramps */
    s.warmup_goyal = 1;                                           /* from --lr to the peak, which is --lr: 32 = 32 */
    assert_int_equal(nd_lr_warmup_issue(&s, why, sizeof why), 1);
    assert_non_null(strstr(why, "changes nothing"));
    for (long t = 0; t < 200; ++t) assert_true(nd_lr_at(&s, t) == 0.1f); /* indeed */
    s.global_batch = 64;
    assert_int_equal(nd_lr_warmup_issue(&s, why, sizeof why), 0);
    s.warmup_steps = 1000; /* the whole run */
    assert_int_equal(nd_lr_warmup_issue(&s, why, sizeof why), 1);
    assert_non_null(strstr(why, "--warmup-steps 1000"));
    s.warmup_steps = 0;
    assert_int_equal(nd_lr_warmup_issue(&s, why, sizeof why), 1); /* --warmup-goyal alone */
}

static void test_clip_by_value(void **state) {
    (void)state;
    float g[5] = {10.0f, -10.0f, 1.0f, -1.0f, 0.0f};
    assert_int_equal(nd_clip_by_value(g, 5, 0.5f, 2.0f), 2); /* scaled: 5, -5, .5, -.5, 0: two clamped */
    assert_float_equal(g[0], 2.0f, 0);
    assert_float_equal(g[1], -2.0f, 0);
    assert_float_equal(g[2], 0.5f, 0);
    assert_float_equal(g[3], -0.5f, 0);
    assert_float_equal(g[4], 0.0f, 0);
}

static void test_clip_by_norm(void **state) {
    (void)state;
    const float g[2] = {6.0f, 8.0f};
    double norm = nd_grad_norm(g, 2, 0.5f); /* ||(3, 4)|| */
    assert_float_equal(norm, 5.0, 1e-12);
    assert_float_equal(nd_clip_norm_factor(norm, 1.0f), 0.2f, 1e-7);
    assert_float_equal(nd_clip_norm_factor(norm, 5.0f), 1.0f, 0);  /* at the limit: unchanged */
    assert_float_equal(nd_clip_norm_factor(norm, 10.0f), 1.0f, 0); /* below: unchanged */
    assert_float_equal(nd_clip_norm_factor(norm, 0.0f), 1.0f, 0);  /* disabled */
}

static void test_momentum_schedule(void **state) {
    (void)state;
    assert_float_equal(nd_momentum_at(0.5f, 0.99f, 10.0f, 0.0), 0.5f, 1e-7);
    assert_float_equal(nd_momentum_at(0.5f, 0.99f, 10.0f, 5.0), 0.745f, 1e-6);
    assert_float_equal(nd_momentum_at(0.5f, 0.99f, 10.0f, 10.0), 0.99f, 1e-7);
    assert_float_equal(nd_momentum_at(0.5f, 0.99f, 10.0f, 42.0), 0.99f, 1e-7);
    assert_float_equal(nd_momentum_at(0.9f, -1.0f, 10.0f, 5.0), 0.9f, 0); /* off */
}

/* Schedules at known steps. References: the closed forms of the README
 * (PyTorch's CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR
 * with anneal_strategy="cos", MultiStepLR), evaluated here in double;
 * hand values where simple. Peak 0.1, 100 steps per epoch, 1000 steps. */
static nd_lr_schedule base(nd_sched_kind kind) {
    nd_lr_schedule s = {.base_lr = 0.1f,
                        .ref_batch = 32,
                        .global_batch = 32,
                        .kind = kind,
                        .steps_per_epoch = 100,
                        .total_steps = 1000,
                        .gamma = 0.1f,
                        .k = 0.5f,
                        .lr_min = 0.001f,
                        .sgdr_t0 = 2.0f,
                        .sgdr_mult = 2.0f,
                        .gbc_tau = 500,
                        .gbc_floor = 0.01f,
                        .onecycle_pct = 0.3f,
                        .onecycle_div = 25.0f,
                        .onecycle_final_div = 1e4f,
                        .plateau_scale = 1.0};
    return s;
}

static void test_decay_schedules(void **state) {
    (void)state;
    nd_lr_schedule s = base(ND_SCHED_STEP);
    s.num_milestones = 2, s.milestones[0] = 300, s.milestones[1] = 600;
    assert_float_equal(nd_lr_at(&s, 299), 0.1f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 300), 0.01f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 600), 0.001f, 1e-9);
    s = base(ND_SCHED_EXP);
    assert_float_equal(nd_lr_at(&s, 200), 0.1 * exp(-0.5 * 2), 1e-7);
    s = base(ND_SCHED_INV);
    assert_float_equal(nd_lr_at(&s, 200), 0.1 / (1 + 0.5 * 2), 1e-7); /* 0.05 */
    s = base(ND_SCHED_SQRT);
    assert_float_equal(nd_lr_at(&s, 600), 0.1 / 2.0, 1e-7); /* 1/sqrt(1 + 0.5*6) */
    s = base(ND_SCHED_INVSQRT);
    s.warmup_steps = 100;
    assert_float_equal(nd_lr_at(&s, 100), 0.1f, 1e-7);
    assert_float_equal(nd_lr_at(&s, 400), 0.05f, 1e-7); /* sqrt(100/400) */
    s = base(ND_SCHED_LINEAR);
    assert_float_equal(nd_lr_at(&s, 250), 0.075f, 1e-7);
    assert_float_equal(nd_lr_at(&s, 1000), 0.0f, 0);
    s = base(ND_SCHED_COSINE);
    for (long t = 0; t <= 1000; t += 125)
        assert_float_equal(nd_lr_at(&s, t), 0.001 + (0.1 - 0.001) * (1 + cos(PI * t / 1000.0)) / 2, 1e-7);
    s = base(ND_SCHED_GBC); /* GBC16 8.3.1: eps_k = (1 - a) eps_0 + a eps_tau */
    assert_float_equal(nd_lr_at(&s, 250), 0.5 * 0.1 + 0.5 * 0.001, 1e-7);
    assert_float_equal(nd_lr_at(&s, 900), 0.001f, 1e-8);
}

static void test_warm_restarts_and_one_cycle(void **state) {
    (void)state;
    nd_lr_schedule s = base(ND_SCHED_SGDR); /* cycles of 2, 4, 8 epochs */
    const double ep[] = {0.0, 1.0, 1.99, 2.0, 4.0, 5.99, 6.0, 10.0};
    const double t_cur[] = {0.0, 1.0, 1.99, 0.0, 2.0, 3.99, 0.0, 4.0}, t_i[] = {2, 2, 2, 4, 4, 4, 8, 8};
    for (int i = 0; i < 8; ++i) {
        const double want = 0.001 + (0.1 - 0.001) * (1 + cos(PI * t_cur[i] / t_i[i])) / 2;
        assert_float_equal(nd_lr_at(&s, (long)(ep[i] * 100 + 0.5)), want, 1e-6);
    }
    s = base(ND_SCHED_ONECYCLE); /* up for 300 steps from 0.004 to 0.1, down to 4e-7 */
    assert_float_equal(nd_lr_at(&s, 0), 0.004f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 150), 0.004 + (0.1 - 0.004) * (1 - cos(PI * 0.5)) / 2, 1e-7);
    assert_float_equal(nd_lr_at(&s, 300), 0.1f, 1e-7);
    assert_float_equal(nd_lr_at(&s, 650), 4e-7 + (0.1 - 4e-7) * (1 + cos(PI * 0.5)) / 2, 1e-7);
    assert_float_equal(nd_lr_at(&s, 1000), 4e-7f, 1e-10);
}

static void test_plateau(void **state) {
    (void)state;
    nd_lr_schedule s = base(ND_SCHED_PLATEAU);
    double best = -1;
    int bad = 0;
    const double metric[] = {0.5, 0.6, 0.6, 0.59, 0.7, 0.7, 0.7};
    const double expect[] = {1, 1, 1, 0.1, 0.1, 0.1, 0.01}; /* patience 2 */
    for (int i = 0; i < 7; ++i) {
        nd_lr_plateau_update(&s, metric[i], &best, &bad, 2);
        assert_float_equal(s.plateau_scale, expect[i], 1e-12);
    }
    assert_float_equal(nd_lr_at(&s, 5), 0.001f, 1e-9);
    nd_sched_kind k;
    assert_int_equal(nd_sched_parse("sgdr", &k), 0);
    assert_int_equal(k, ND_SCHED_SGDR);
    assert_int_equal(nd_sched_parse("triangular", &k), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_scaling),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_warmup_composes),
        cmocka_unit_test(test_warmup_issues),
        cmocka_unit_test(test_clip_by_value),
        cmocka_unit_test(test_clip_by_norm),
        cmocka_unit_test(test_momentum_schedule),
        cmocka_unit_test(test_decay_schedules),
        cmocka_unit_test(test_warm_restarts_and_one_cycle),
        cmocka_unit_test(test_plateau),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
