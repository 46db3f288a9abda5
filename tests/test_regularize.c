/* L1 gradient terms and the max-norm constraint. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nndist/regularize.h"

static void test_l1(void **state) {
    (void)state;
    const float w[4] = {2.0f, -0.5f, 0.0f, 1e-9f};
    float g[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    nd_reg_l1(g, w, 4, 0.25f);
    assert_float_equal(g[0], 1.25f, 0);
    assert_float_equal(g[1], 0.75f, 0);
    assert_float_equal(g[2], 1.0f, 0); /* |w| has no slope at 0: nothing added */
    assert_float_equal(g[3], 1.25f, 0);
}

static void test_max_norm(void **state) {
    (void)state;
    float w[2 * 3] = {3, 0, 4, /* norm 5: clamped to 2 */ 0.6f, 0.8f, 0}; /* norm 1: kept */
    assert_int_equal(nd_reg_max_norm(w, 2, 3, 2.0f), 1);
    assert_float_equal(w[0], 1.2f, 1e-6);
    assert_float_equal(w[2], 1.6f, 1e-6);
    assert_float_equal(sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]), 2.0, 1e-6);
    assert_float_equal(w[3], 0.6f, 0);
    assert_float_equal(w[4], 0.8f, 0);
}

/* Penalty gradients for nd_reg_value_from_gradient: ctx is the coefficient. */
static void l2_grad(void *ctx, const float *w, float *g) {
    for (int i = 0; i < 4; ++i) g[i] = 0.0f;
    nd_reg_l2(g, w, 4, *(const float *)ctx);
}
static void elastic_grad(void *ctx, const float *w, float *g) {
    l2_grad(ctx, w, g);
    nd_reg_l1(g, w, 4, 0.25f);
}
static void wrong_sign_grad(void *ctx, const float *w, float *g) { /* a bug: decay that grows the weights */
    l2_grad(ctx, w, g);
    for (int i = 0; i < 4; ++i) g[i] = -g[i];
}
static void skips_one_grad(void *ctx, const float *w, float *g) { /* a bug: one tensor left out */
    l2_grad(ctx, w, g);
    g[3] = 0.0f;
}

/* The penalty value recovered from a gradient routine is its closed form
 * (what `nndist sanity` holds the trainer's penalty code against), and a
 * wrong routine gives a value the check refuses. */
static void test_value_from_gradient(void **state) {
    (void)state;
    const float w[4] = {2.0f, -0.5f, 0.0f, 1.5f};
    float scratch[8], lam = 0.1f;
    const double l2 = 0.5 * 0.1 * (4.0 + 0.25 + 0.0 + 2.25), l1 = 0.25 * (2.0 + 0.5 + 0.0 + 1.5);
    assert_float_equal(nd_reg_value_from_gradient(l2_grad, &lam, w, 4, scratch), l2, 1e-6);
    assert_float_equal(nd_reg_value_from_gradient(elastic_grad, &lam, w, 4, scratch), l2 + l1, 1e-6);
    const double neg = nd_reg_value_from_gradient(wrong_sign_grad, &lam, w, 4, scratch);
    assert_true(neg < 0.0); /* "raises the loss" fails */
    const double part = nd_reg_value_from_gradient(skips_one_grad, &lam, w, 4, scratch);
    assert_true(part > 0.0 && fabs(part - l2) > 1e-4 * l2); /* raises it, but not by the closed form: fails */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l1),
        cmocka_unit_test(test_max_norm),
        cmocka_unit_test(test_value_from_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
