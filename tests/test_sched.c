/* Learning-rate scaling and warmup, clipping by value and by global norm. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nndist/sched.h"

static void test_linear_scaling(void **state) {
    (void)state;
    nd_lr_schedule s = {0.01f, 64, 256, 0}; /* 4 ranks of 64 */
    assert_float_equal(nd_lr_peak(&s), 0.04f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 0), 0.04f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 1000), 0.04f, 1e-8);
    nd_lr_schedule ref = {0.1f, 256, 64, 0}; /* rate given for a larger batch scales down */
    assert_float_equal(nd_lr_peak(&ref), 0.025f, 1e-8);
}

static void test_warmup(void **state) {
    (void)state;
    nd_lr_schedule s = {0.01f, 64, 128, 10};
    assert_float_equal(nd_lr_at(&s, 0), 0.01f, 1e-8);  /* starts at the unscaled rate */
    assert_float_equal(nd_lr_at(&s, 5), 0.015f, 1e-8); /* half way */
    assert_float_equal(nd_lr_at(&s, 9), 0.019f, 1e-8);
    assert_float_equal(nd_lr_at(&s, 10), 0.02f, 1e-8); /* peak from step W on */
    assert_float_equal(nd_lr_at(&s, 11), 0.02f, 1e-8);
}

static void test_clip_by_value(void **state) {
    (void)state;
    float g[5] = {10.0f, -10.0f, 1.0f, -1.0f, 0.0f};
    nd_clip_by_value(g, 5, 0.5f, 2.0f); /* scaled: 5, -5, .5, -.5, 0 */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_scaling),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_clip_by_value),
        cmocka_unit_test(test_clip_by_norm),
        cmocka_unit_test(test_momentum_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
