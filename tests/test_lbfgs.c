/* L-BFGS (src/core/lbfgs.c) against independent references: the cubic's
 * known minimum, the two-loop recursion against the inverse-Hessian
 * recursion written out as dense matrices, convergence on a convex
 * quadratic and on Rosenbrock's function with the strong Wolfe conditions
 * checked at every accepted step. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/lbfgs.h"
#include "nndist/rng.h"

/* x^3 - 3x has its local minimum at 1: the cubic through two points of it
 * (values and slopes) finds it, inside or clamped to the bounds. */
static void test_cubic_finds_the_minimum(void **state) {
    (void)state;
    assert_true(fabs(nd_lbfgs_cubic(0.0, 0.0, -3.0, 2.0, 2.0, 9.0, NULL) - 1.0) < 1e-12);
    assert_true(fabs(nd_lbfgs_cubic(2.0, 2.0, 9.0, 0.0, 0.0, -3.0, NULL) - 1.0) < 1e-12);
    const double bounds[2] = {1.5, 3.0};
    assert_true(fabs(nd_lbfgs_cubic(0.0, 0.0, -3.0, 2.0, 2.0, 9.0, bounds) - 1.5) < 1e-12);
}

enum { DIM = 5, PAIRS = 4 };

/* H of the pairs (oldest first) by the BFGS recursion on dense matrices:
 * H0 = h I, H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T. */
static void dense_inverse_hessian(const double s[][DIM], const double y[][DIM], int pairs, double h,
                                  double H[DIM][DIM]) {
    for (int i = 0; i < DIM; ++i)
        for (int j = 0; j < DIM; ++j) H[i][j] = i == j ? h : 0.0;
    for (int p = 0; p < pairs; ++p) {
        double ys = 0.0;
        for (int i = 0; i < DIM; ++i) ys += y[p][i] * s[p][i];
        const double rho = 1.0 / ys;
        double V[DIM][DIM], T[DIM][DIM], N[DIM][DIM];
        for (int i = 0; i < DIM; ++i)
            for (int j = 0; j < DIM; ++j) V[i][j] = (i == j) - rho * y[p][i] * s[p][j]; /* I - rho y s^T */
        for (int i = 0; i < DIM; ++i)
            for (int j = 0; j < DIM; ++j) {
                T[i][j] = 0.0; /* V^T H */
                for (int k = 0; k < DIM; ++k) T[i][j] += V[k][i] * H[k][j];
            }
        for (int i = 0; i < DIM; ++i)
            for (int j = 0; j < DIM; ++j) {
                N[i][j] = rho * s[p][i] * s[p][j];
                for (int k = 0; k < DIM; ++k) N[i][j] += T[i][k] * V[k][j];
            }
        memcpy(H, N, sizeof N);
    }
}

/* Pairs y = A s of an SPD A (so y.s > 0), pushed into a history of
 * `history` rows: the two-loop gives -H g for the newest min(history,
 * PAIRS) pairs, the oldest dropped. */
static void two_loop_case(int history) {
    nd_rng rng;
    nd_rng_seed(&rng, 7, 1, (uint64_t)history);
    double A[DIM][DIM], B[DIM][DIM];
    for (int i = 0; i < DIM; ++i)
        for (int j = 0; j < DIM; ++j) B[i][j] = nd_rng_normal(&rng);
    for (int i = 0; i < DIM; ++i)
        for (int j = 0; j < DIM; ++j) {
            A[i][j] = i == j ? 1.0 : 0.0;
            for (int k = 0; k < DIM; ++k) A[i][j] += B[k][i] * B[k][j];
        }
    nd_lbfgs_config cfg = nd_lbfgs_defaults();
    cfg.history = history;
    nd_lbfgs lb;
    nd_error err = {0};
    assert_int_equal(nd_lbfgs_create(&lb, &cfg, DIM, &err), ND_OK);
    double s[PAIRS][DIM], y[PAIRS][DIM];
    for (int p = 0; p < PAIRS; ++p) {
        float sf[DIM], yf[DIM];
        for (int i = 0; i < DIM; ++i) sf[i] = (float)nd_rng_normal(&rng);
        for (int i = 0; i < DIM; ++i) {
            double v = 0.0;
            for (int j = 0; j < DIM; ++j) v += A[i][j] * sf[j];
            yf[i] = (float)v;
        }
        for (int i = 0; i < DIM; ++i) s[p][i] = sf[i], y[p][i] = yf[i];
        assert_int_equal(nd_lbfgs_push(&lb, sf, yf), 1);
    }
    const int kept = history < PAIRS ? history : PAIRS, first = PAIRS - kept;
    assert_int_equal(lb.pairs, kept);
    double ys = 0.0, yy = 0.0;
    for (int i = 0; i < DIM; ++i) ys += y[PAIRS - 1][i] * s[PAIRS - 1][i], yy += y[PAIRS - 1][i] * y[PAIRS - 1][i];
    assert_true(fabs(lb.h_diag - ys / yy) < 1e-9 * (ys / yy));
    double H[DIM][DIM];
    dense_inverse_hessian(s + first, y + first, kept, ys / yy, H);
    float g[DIM], dir[DIM];
    for (int i = 0; i < DIM; ++i) g[i] = (float)nd_rng_normal(&rng);
    nd_lbfgs_direction(&lb, g, dir);
    for (int i = 0; i < DIM; ++i) {
        double want = 0.0;
        for (int j = 0; j < DIM; ++j) want -= H[i][j] * g[j];
        assert_true(fabs(dir[i] - want) < 1e-4 * (1.0 + fabs(want)));
    }
    /* The secant condition of the newest pair: H y = s. */
    float yn[DIM], hy[DIM];
    for (int i = 0; i < DIM; ++i) yn[i] = (float)-y[PAIRS - 1][i];
    nd_lbfgs_direction(&lb, yn, hy);
    for (int i = 0; i < DIM; ++i) assert_true(fabs(hy[i] - s[PAIRS - 1][i]) < 1e-4 * (1.0 + fabs(s[PAIRS - 1][i])));
    /* A pair without curvature is refused and changes nothing. */
    float z[DIM] = {0};
    assert_int_equal(nd_lbfgs_push(&lb, yn, z), 0);
    assert_int_equal(lb.pairs, kept);
    nd_lbfgs_destroy(&lb);
}

static void test_two_loop_is_the_bfgs_inverse(void **state) {
    (void)state;
    two_loop_case(10); /* room for every pair */
    two_loop_case(2);  /* the ring drops the two oldest */
}

/* Objectives: each evaluation is counted and the latest kept. */
typedef struct {
    int dim;
    double A[20][20], b[20]; /* the quadratic 0.5 x'Ax - b'x */
    int evals;
} problem;

static nd_status quadratic(void *ctx, const float *x, float *g, double *f, nd_error *err) {
    (void)err;
    problem *p = ctx;
    double v = 0.0;
    for (int i = 0; i < p->dim; ++i) {
        double ax = 0.0;
        for (int j = 0; j < p->dim; ++j) ax += p->A[i][j] * x[j];
        g[i] = (float)(ax - p->b[i]);
        v += 0.5 * x[i] * ax - p->b[i] * x[i];
    }
    *f = v;
    p->evals += 1;
    return ND_OK;
}

/* The extended Rosenbrock function, minimum 0 at (1, ..., 1). */
static nd_status rosenbrock(void *ctx, const float *x, float *g, double *f, nd_error *err) {
    (void)err;
    problem *p = ctx;
    double v = 0.0;
    for (int i = 0; i < p->dim; ++i) g[i] = 0.0f;
    for (int i = 0; i + 1 < p->dim; ++i) {
        const double a = (double)x[i + 1] - (double)x[i] * x[i], b = 1.0 - x[i];
        v += 100.0 * a * a + b * b;
        g[i] += (float)(-400.0 * a * x[i] - 2.0 * b);
        g[i + 1] += (float)(200.0 * a);
    }
    *f = v;
    p->evals += 1;
    return ND_OK;
}

/* A quadratic of condition 100 in 20 dimensions: L-BFGS reaches x = A^-1 b. */
static void test_quadratic_converges(void **state) {
    (void)state;
    problem p = {.dim = 20};
    nd_rng rng;
    nd_rng_seed(&rng, 3, 0, 0);
    double xs[20];
    for (int i = 0; i < p.dim; ++i) xs[i] = nd_rng_normal(&rng);
    /* A = Q diag(1..100) Q^T with Q from Gram-Schmidt of random vectors. */
    double Q[20][20];
    for (int k = 0; k < p.dim; ++k) {
        for (int i = 0; i < p.dim; ++i) Q[k][i] = nd_rng_normal(&rng);
        for (int j = 0; j < k; ++j) {
            double d = 0.0;
            for (int i = 0; i < p.dim; ++i) d += Q[k][i] * Q[j][i];
            for (int i = 0; i < p.dim; ++i) Q[k][i] -= d * Q[j][i];
        }
        double nrm = 0.0;
        for (int i = 0; i < p.dim; ++i) nrm += Q[k][i] * Q[k][i];
        for (int i = 0; i < p.dim; ++i) Q[k][i] /= sqrt(nrm);
    }
    for (int i = 0; i < p.dim; ++i)
        for (int j = 0; j < p.dim; ++j) {
            p.A[i][j] = 0.0;
            for (int k = 0; k < p.dim; ++k) p.A[i][j] += Q[k][i] * (1.0 + 99.0 * k / (p.dim - 1)) * Q[k][j];
        }
    for (int i = 0; i < p.dim; ++i) {
        p.b[i] = 0.0;
        for (int j = 0; j < p.dim; ++j) p.b[i] += p.A[i][j] * xs[j];
    }
    for (int ls = 0; ls < 2; ++ls) {
        nd_lbfgs_config cfg = nd_lbfgs_defaults();
        cfg.max_iter = 100;
        cfg.max_eval = 200;
        cfg.tolerance_grad = 1e-3; /* float x: the gradient is exact to ~1e-5 */
        cfg.line_search = ls ? ND_LINE_SEARCH_NONE : ND_LINE_SEARCH_STRONG_WOLFE;
        nd_lbfgs lb;
        nd_error err = {0};
        assert_int_equal(nd_lbfgs_create(&lb, &cfg, (size_t)p.dim, &err), ND_OK);
        float x[20] = {0};
        nd_lbfgs_report r;
        p.evals = 0;
        assert_int_equal(nd_lbfgs_step(&lb, x, quadratic, NULL, &p, &r, &err), ND_OK);
        assert_int_equal(r.end, ND_LBFGS_OPTIMAL);
        assert_int_equal(r.evaluations, p.evals);
        assert_true(r.iterations < 100);
        for (int i = 0; i < p.dim; ++i) assert_true(fabs(x[i] - xs[i]) < 1e-4 * (1.0 + fabs(xs[i])));
        /* At the optimum a further step evaluates once and stops. */
        assert_int_equal(nd_lbfgs_step(&lb, x, quadratic, NULL, &p, &r, &err), ND_OK);
        assert_int_equal(r.end, ND_LBFGS_OPTIMAL);
        assert_int_equal(r.evaluations, 1);
        assert_int_equal(r.iterations, 0);
        nd_lbfgs_destroy(&lb);
    }
}

/* Rosenbrock in 10 dimensions from (-1.2, 1, -1.2, 1, ...), one iteration
 * per step: each step's accepted point meets the strong Wolfe conditions
 * against the point it started from, the history carries over the steps,
 * and the run ends at (1, ..., 1). */
static void test_rosenbrock_wolfe_every_step(void **state) {
    (void)state;
    enum { D = 10 };
    problem p = {.dim = D};
    nd_lbfgs_config cfg = nd_lbfgs_defaults();
    cfg.max_iter = 1;
    nd_lbfgs lb;
    nd_error err = {0};
    assert_int_equal(nd_lbfgs_create(&lb, &cfg, D, &err), ND_OK);
    float x[D], g0[D], g1[D];
    for (int i = 0; i < D; ++i) x[i] = i % 2 ? 1.0f : -1.2f;
    double f0, f1;
    int steps = 0, checked = 0;
    for (; steps < 300; ++steps) {
        assert_int_equal(rosenbrock(&p, x, g0, &f0, &err), ND_OK);
        nd_lbfgs_report r;
        assert_int_equal(nd_lbfgs_step(&lb, x, rosenbrock, NULL, &p, &r, &err), ND_OK);
        assert_true(fabs(r.loss_start - f0) <= 1e-12 * (1.0 + f0));
        if (r.end == ND_LBFGS_OPTIMAL && r.iterations == 0) break;
        if (r.end != ND_LBFGS_MAX_ITER) break; /* converged to within float rounding */
        assert_int_equal(rosenbrock(&p, x, g1, &f1, &err), ND_OK);
        assert_true(fabs(r.loss - f1) <= 1e-12 * (1.0 + f1));
        double gtd0 = 0.0, gtd1 = 0.0;
        for (int i = 0; i < D; ++i) gtd0 += (double)g0[i] * lb.d[i], gtd1 += (double)g1[i] * lb.d[i];
        assert_true(gtd0 < 0.0);
        /* Armijo, and the strong curvature condition, with room for float steps. */
        assert_true(f1 <= f0 + cfg.c1 * r.step * gtd0 + 1e-9 * (1.0 + fabs(f0)));
        assert_true(fabs(gtd1) <= -cfg.c2 * gtd0 + 1e-6 * (1.0 + fabs(gtd0)));
        checked += 1;
    }
    assert_true(checked > 20);
    assert_true(steps < 300);
    assert_true(lb.pairs > 0);
    for (int i = 0; i < D; ++i) assert_true(fabs(x[i] - 1.0f) < 1e-3);
    nd_lbfgs_destroy(&lb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cubic_finds_the_minimum),
        cmocka_unit_test(test_two_loop_is_the_bfgs_inverse),
        cmocka_unit_test(test_quadratic_converges),
        cmocka_unit_test(test_rosenbrock_wolfe_every_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
