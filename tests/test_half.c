/* fp16 and bf16 conversions (nndist/half.h) against their definitions:
 * every fp16 pattern decoded from sign, exponent and mantissa; rounding
 * checked against the nearest value found by search in double precision,
 * ties to the even pattern, beyond the largest finite value by more than
 * half a step: infinity. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/half.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* fp16 by its definition (IEEE 754 binary16). */
static double fp16_value(uint16_t h) {
    const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return sign ? -v : v;
}

/* The positive finite fp16 values in order (pattern i is value i), and
 * 65536 in place of infinity: the value a round-up past 65504 reaches. */
static double fp16_table[0x7C01];

static void fill_fp16_table(void) {
    for (int i = 0; i < 0x7C00; ++i) fp16_table[i] = fp16_value((uint16_t)i);
    fp16_table[0x7C00] = 65536.0;
}

/* Nearest fp16 pattern of finite x, ties to even, by binary search. */
static uint16_t fp16_reference(float x) {
    const double a = fabs((double)x);
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (a >= 65536.0) return sign | 0x7C00;
    int lo = 0, hi = 0x7C00; /* fp16_table[lo] <= a < fp16_table[hi] */
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (fp16_table[mid] <= a) lo = mid;
        else hi = mid;
    }
    const double dlo = a - fp16_table[lo], dhi = fp16_table[hi] - a;
    const int pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | (uint16_t)pick;
}

/* Nearest bf16 pattern of finite x, ties to even: the two candidates are
 * the floats with the low 16 bits cleared and the next one up (the step
 * past the largest finite bf16 is infinity, at 2^128). */
static uint16_t bf16_reference(float x) {
    const uint32_t u = bits_of(x) & 0x7FFFFFFFu;
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const uint32_t down = u & 0xFFFF0000u, up = down + 0x10000u;
    const double a = fabs((double)x), vd = (double)float_of(down);
    const double vu = up == 0x7F800000u ? ldexp(1.0, 128) : (double)float_of(up);
    const double dd = a - vd, du = vu - a;
    const uint32_t pick = dd < du ? down : du < dd ? up : ((down >> 16) % 2 == 0 ? down : up);
    return sign | (uint16_t)(pick >> 16);
}

static void test_fp16_decodes_every_pattern(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const double want = fp16_value((uint16_t)h);
        const float got = nd_fp16_to_f32((uint16_t)h);
        if (isnan(want)) {
            assert_true(isnan(got));
        } else {
            assert_true((double)got == want);
            assert_int_equal(signbit(got) != 0, (h >> 15) != 0); /* -0 stays -0 */
        }
    }
}

static void check_fp16(float x) {
    const uint16_t got = nd_f32_to_fp16(x), want = fp16_reference(x);
    if (got != want) fail_msg("fp16(%.9g): got 0x%04x, want 0x%04x", (double)x, got, want);
}

static void check_bf16(float x) {
    const uint16_t got = nd_f32_to_bf16(x), want = bf16_reference(x);
    if (got != want) fail_msg("bf16(%.9g): got 0x%04x, want 0x%04x", (double)x, got, want);
}

static void test_fp16_rounds_to_nearest_even(void **state) {
    (void)state;
    fill_fp16_table();
    /* Every pattern, the midpoints to the next (exact ties: 12 significant
     * bits fit a float), and the floats just beside each midpoint. */
    for (int i = 0; i < 0x7C00; ++i) {
        const double v = fp16_table[i], mid = 0.5 * (v + fp16_table[i + 1]);
        const float fm = (float)mid;
        assert_true((double)fm == mid);
        const float xs[] = {(float)v, fm, nextafterf(fm, 0.0f), nextafterf(fm, INFINITY)};
        for (int k = 0; k < 4; ++k) check_fp16(xs[k]), check_fp16(-xs[k]);
    }
    /* Random floats over fp16's range and beyond (exponents 2^-30 to 2^20). */
    srand(7);
    for (int i = 0; i < 200000; ++i) {
        const uint32_t mant = ((uint32_t)rand() << 8 ^ (uint32_t)rand()) & 0x7FFFFFu;
        const uint32_t exp = 127 - 30 + (uint32_t)(rand() % 51);
        check_fp16(float_of(exp << 23 | mant | (rand() & 1 ? 0x80000000u : 0)));
    }
    /* The edge of the range: 65519.99 rounds down to 65504, 65520 is the
     * tie with the step past it and goes to infinity. */
    assert_int_equal(nd_f32_to_fp16(65504.0f), 0x7BFF);
    assert_int_equal(nd_f32_to_fp16(nextafterf(65520.0f, 0.0f)), 0x7BFF);
    assert_int_equal(nd_f32_to_fp16(65520.0f), 0x7C00);
    assert_int_equal(nd_f32_to_fp16(-1e6f), 0xFC00);
    assert_int_equal(nd_f32_to_fp16(INFINITY), 0x7C00);
    assert_int_equal(nd_f32_to_fp16(-0.0f), 0x8000);
    assert_int_equal(nd_f32_to_fp16(ldexpf(1.0f, -25)), 0x0000);                   /* a tie with 0: even */
    assert_int_equal(nd_f32_to_fp16(nextafterf(ldexpf(1.0f, -25), 1.0f)), 0x0001); /* past it: the least subnormal */
    const uint16_t nan = nd_f32_to_fp16(NAN);
    assert_true((nan & 0x7C00) == 0x7C00 && (nan & 0x03FF) != 0);
}

static void test_bf16_rounds_to_nearest_even(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 0x10000; ++h) { /* decoding: the top half of a float */
        const float got = nd_bf16_to_f32((uint16_t)h), want = float_of(h << 16);
        assert_true(isnan(want) ? isnan(got) : bits_of(got) == bits_of(want));
    }
    /* Uniform bit patterns: every exponent, subnormals included. */
    srand(11);
    for (int i = 0; i < 400000; ++i) {
        const uint32_t u = (uint32_t)rand() << 17 ^ (uint32_t)rand() << 2 ^ (uint32_t)(rand() & 3);
        const float x = float_of(u);
        if (isfinite(x)) check_bf16(x);
    }
    /* Exact ties and their neighbours. */
    for (uint32_t top = 0; top < 0x7F80; top += 37) {
        const float tie = float_of(top << 16 | 0x8000u);
        check_bf16(tie), check_bf16(nextafterf(tie, 0.0f)), check_bf16(nextafterf(tie, INFINITY));
    }
    assert_int_equal(nd_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(nd_f32_to_bf16(FLT_MAX), 0x7F80); /* past the largest bf16 by more than half a step */
    assert_int_equal(nd_f32_to_bf16(-INFINITY), 0xFF80);
    const uint16_t nan = nd_f32_to_bf16(float_of(0x7F800001u)); /* a NaN whose payload is all in the low half */
    assert_true((nan & 0x7F80) == 0x7F80 && (nan & 0x007F) != 0);
}

/* The array forms: scaling, the overflow flag, and the sum rounded once. */
static void test_arrays_scale_flag_and_sum(void **state) {
    (void)state;
    enum { N = 3000, PARTS = 3 };
    static float in[PARTS][N], back[N];
    static uint16_t wire[PARTS * N], sum[N];
    srand(5);
    for (int b = 0; b < PARTS; ++b)
        for (int i = 0; i < N; ++i) in[b][i] = ((float)rand() / (float)RAND_MAX - 0.5f) * ldexpf(1.0f, rand() % 20 - 8);
    for (int k = 0; k < 2; ++k) {
        const nd_half_kind kind = k ? ND_HALF_BF16 : ND_HALF_FP16;
        for (int b = 0; b < PARTS; ++b) nd_half_from_f32(kind, wire + (size_t)b * N, in[b], 0.25f, N);
        for (int i = 0; i < N; ++i) {
            const uint16_t want = k ? nd_f32_to_bf16(in[1][i] * 0.25f) : nd_f32_to_fp16(in[1][i] * 0.25f);
            assert_int_equal(wire[N + i], want);
        }
        nd_half_sum(kind, sum, wire, N, N, PARTS);
        for (int i = 0; i < N; ++i) {
            float s = 0.0f; /* in float, in block order, rounded once */
            for (int b = 0; b < PARTS; ++b)
                s += k ? nd_bf16_to_f32(wire[(size_t)b * N + i]) : nd_fp16_to_f32(wire[(size_t)b * N + i]);
            assert_int_equal(sum[i], k ? nd_f32_to_bf16(s) : nd_f32_to_fp16(s));
        }
        assert_int_equal(nd_half_to_f32(kind, back, sum, 4.0f, N), 1);
        for (int i = 0; i < N; ++i)
            assert_true(back[i] == 4.0f * (k ? nd_bf16_to_f32(sum[i]) : nd_fp16_to_f32(sum[i])));
        sum[N / 2] = k ? 0x7F80 : 0x7C00; /* an overflow on the wire */
        assert_int_equal(nd_half_to_f32(kind, back, sum, 1.0f, N), 0);
        assert_true(isinf(back[N / 2]));
    }
    /* fp16: 40000 + 40000 overflows as a sum of fp16 values, not in fp32 */
    const float big[2] = {40000.0f, 40000.0f};
    uint16_t w2[2], s2;
    nd_half_from_f32(ND_HALF_FP16, w2, big, 1.0f, 2);
    nd_half_sum(ND_HALF_FP16, &s2, w2, 1, 1, 2);
    assert_int_equal(s2, 0x7C00);
    nd_half_from_f32(ND_HALF_FP16, w2, big, 0.5f, 2); /* scaled by 1/ranks it fits */
    nd_half_sum(ND_HALF_FP16, &s2, w2, 1, 1, 2);
    assert_true(nd_fp16_to_f32(s2) == 40000.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_decodes_every_pattern),
        cmocka_unit_test(test_fp16_rounds_to_nearest_even),
        cmocka_unit_test(test_bf16_rounds_to_nearest_even),
        cmocka_unit_test(test_arrays_scale_flag_and_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
