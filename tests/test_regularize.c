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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l1),
        cmocka_unit_test(test_max_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
