/* Normalization statistics: standardization (global and per feature) and
 * scaling to [-1, 1], from partial results combined as ranks would. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nndist/normalize.h"

/* 4 rows x 2 features, split as two "ranks" of 2 rows. */
static const float x[8] = {1, 10, 3, 10, 5, 10, 7, 10};

static void test_standardize(void **state) {
    (void)state;
    double a[5] = {0}, b[5] = {0};
    nd_stats_accumulate(a, x, 2, 2);
    nd_stats_accumulate(b, x + 4, 2, 2);
    for (int i = 0; i < 5; ++i) a[i] += b[i]; /* the allreduce */
    float mean[2], inv[2];
    nd_stats_finish(a, 2, ND_NORM_FEATURE, mean, inv);
    assert_float_equal(mean[0], 4.0f, 1e-6);
    assert_float_equal(inv[0], 1.0 / sqrt(5.0), 1e-6); /* var of 1,3,5,7 = 5 */
    assert_float_equal(mean[1], 10.0f, 1e-6);
    assert_float_equal(inv[1], 1.0f, 0); /* constant column: only centred */
    nd_stats_finish(a, 2, ND_NORM_GLOBAL, mean, inv);
    assert_float_equal(mean[0], 7.0f, 1e-6); /* mean of all 8 values */
    assert_float_equal(mean[1], 7.0f, 1e-6);
    assert_float_equal(inv[0], 1.0 / sqrt(11.5), 1e-6); /* (1+9+25+49+4*100)/8 - 7^2 = 11.5 */
}

static void test_minmax(void **state) {
    (void)state;
    double a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i] = b[i] = -INFINITY;
    nd_range_accumulate(a, x, 2, 2);
    nd_range_accumulate(b, x + 4, 2, 2);
    for (int i = 0; i < 4; ++i) a[i] = fmax(a[i], b[i]); /* the max-allreduce */
    float mean[2], inv[2], y[8];
    nd_range_finish(a, 2, mean, inv);
    for (int i = 0; i < 8; ++i) y[i] = x[i];
    nd_normalize_apply(y, 4, 2, mean, inv);
    assert_float_equal(y[0], -1.0f, 1e-6);
    assert_float_equal(y[2], -1.0f / 3.0f, 1e-6);
    assert_float_equal(y[6], 1.0f, 1e-6);
    assert_float_equal(y[1], 0.0f, 0); /* constant column: centred, not blown up */
    nd_norm_kind k;
    assert_int_equal(nd_norm_parse("minmax", &k), 0);
    assert_int_equal(k, ND_NORM_MINMAX);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standardize),
        cmocka_unit_test(test_minmax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
