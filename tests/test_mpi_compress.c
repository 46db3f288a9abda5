/* The compressed exchanges (--compress topk, powersgd) against their
 * definitions. Run with `mpiexec -n 2`. The arithmetic is checked alone
 * (top-k selection against a sort, Gram-Schmidt, low-rank exactness); the
 * exchanges on a hand-made model whose gradients every rank can compute
 * for every rank, so each knows the true sum without asking; then short
 * training runs. Collective work comes first, assertions last. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "exchanges/feedback.h"
#include "fixture.h"
#include "mpi_fixture.h"
#include "nndist/compress.h"
#include "nndist/rng.h"

static nd_comm *world;

static const float *sort_key;
/* By magnitude, descending; ties by index (the selection's rule). */
static int by_magnitude(const void *a, const void *b) {
    const int i = *(const int *)a, j = *(const int *)b;
    const float x = fabsf(sort_key[i]), y = fabsf(sort_key[j]);
    if (x != y) return x > y ? -1 : 1;
    return (i > j) - (i < j);
}
static int by_index(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static void test_topk_selection_matches_sort(void **state) {
    (void)state;
    const size_t sizes[] = {1, 2, 7, 100, 1000, 4097, 20000}; /* the last: the sampled guess */
    nd_rng rng;
    nd_rng_seed(&rng, 7, 1, 2);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
        const size_t n = sizes[si];
        float *a = malloc(sizeof(float) * n), *scratch = malloc(sizeof(float) * n);
        int *order = malloc(sizeof(int) * n);
        nd_topk_pair *out = malloc(sizeof *out * n);
        uint32_t *where = malloc(sizeof *where * n);
        for (int variant = 0; variant < 3; ++variant) {
            for (size_t i = 0; i < n; ++i) {
                const double v = nd_rng_normal(&rng);
                /* 0: distinct values; 1: few values, many ties; 2: sorted ascending */
                a[i] = variant == 0 ? (float)v : variant == 1 ? (float)(int)(3.0 * v) : (float)i - (float)n / 2;
            }
            const size_t ks[] = {1, n / 3 + 1, n};
            for (int ki = 0; ki < 3; ++ki) {
                const size_t k = ks[ki] > n ? n : ks[ki];
                nd_topk_select(a, n, k, scratch, where, out);
                for (size_t i = 0; i < n; ++i) order[i] = (int)i;
                sort_key = a;
                qsort(order, n, sizeof *order, by_magnitude);
                qsort(order, k, sizeof *order, by_index);
                for (size_t j = 0; j < k; ++j) {
                    assert_int_equal(out[j].index, order[j]);
                    assert_true(out[j].value == a[order[j]]);
                }
                sort_key = a;
                qsort(order, n, sizeof *order, by_magnitude);
                assert_true(nd_topk_threshold(a, n, k, scratch) == fabsf(a[order[k - 1]]));
                /* The error-feedback form: e + g in place, then the same selection. */
                float *e = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
                nd_topk_pair *out2 = malloc(sizeof *out2 * n);
                for (size_t i = 0; i < n; ++i) g[i] = 0.5f * a[i], e[i] = a[i] - g[i];
                nd_topk_accumulate_select(e, g, n, k, scratch, where, out2);
                for (size_t i = 0; i < n; ++i) assert_true(e[i] == a[i] - g[i] + g[i]);
                nd_topk_select(e, n, k, scratch, where, out);
                assert_memory_equal(out, out2, sizeof *out * k);
                free(e), free(g), free(out2);
            }
        }
        free(a), free(scratch), free(order), free(out), free(where);
    }
    assert_int_equal(nd_topk_count(535818, 0.01), 5359);
    assert_int_equal(nd_topk_count(10, 1e-9), 1);
    assert_int_equal(nd_topk_count(10, 1.0), 10);
}

static void test_orthogonalize_gives_orthonormal_columns(void **state) {
    (void)state;
    enum { ROWS = 57, R = 4 };
    float p[ROWS * R];
    nd_rng rng;
    nd_rng_seed(&rng, 3, 0, 0);
    for (int i = 0; i < ROWS * R; ++i) p[i] = (float)nd_rng_normal(&rng) + 5.0f; /* far from orthogonal */
    nd_psgd_orthogonalize(p, ROWS, R);
    for (int a = 0; a < R; ++a)
        for (int b = 0; b < R; ++b) {
            double dot = 0.0;
            for (int i = 0; i < ROWS; ++i) dot += (double)p[i * R + a] * p[i * R + b];
            assert_true(fabs(dot - (a == b)) < 1e-5);
        }
    /* A dependent column becomes zero; the others stay orthonormal. */
    for (int i = 0; i < ROWS; ++i) p[i * R + 2] = 2.0f * p[i * R + 0] - p[i * R + 1];
    nd_psgd_orthogonalize(p, ROWS, R);
    double zero = 0.0;
    for (int i = 0; i < ROWS; ++i) zero += fabs(p[i * R + 2]);
    assert_true(zero == 0.0);
}

/* M' = P Q^T after one power step reproduces M when M has rank <= r, and
 * when r >= the smaller side of M. */
static double low_rank_error(int rows, int cols, int rank, int r) {
    float *a = malloc(sizeof(float) * rows * rank), *b = malloc(sizeof(float) * cols * rank);
    float *m = malloc(sizeof(float) * rows * cols), *out = malloc(sizeof(float) * rows * cols);
    float *p = malloc(sizeof(float) * rows * r), *q = malloc(sizeof(float) * cols * r);
    nd_rng rng;
    nd_rng_seed(&rng, 11, (uint64_t)rows, (uint64_t)rank);
    for (int i = 0; i < rows * rank; ++i) a[i] = (float)nd_rng_normal(&rng);
    for (int i = 0; i < cols * rank; ++i) b[i] = (float)nd_rng_normal(&rng);
    for (int i = 0; i < cols * r; ++i) q[i] = (float)nd_rng_normal(&rng);
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) {
            double s = 0.0;
            for (int t = 0; t < rank; ++t) s += (double)a[i * rank + t] * b[j * rank + t];
            m[i * cols + j] = (float)s;
        }
    const nd_psgd_matrix x = {.offset = 0, .p_offset = 0, .q_offset = 0, .rows = rows, .cols = cols};
    nd_psgd_multiply_q(m, NULL, &x, 1, r, q, p);
    nd_psgd_orthogonalize(p, rows, r);
    nd_psgd_multiply_p(m, &x, 1, r, p, q);
    nd_psgd_decompress(out, NULL, 0.0f, &x, 1, r, p, q);
    double num = 0.0, den = 0.0;
    for (int i = 0; i < rows * cols; ++i) num += pow((double)out[i] - m[i], 2), den += (double)m[i] * m[i];
    free(a), free(b), free(m), free(out), free(p), free(q);
    return sqrt(num / den);
}

static void test_powersgd_low_rank_is_exact(void **state) {
    (void)state;
    const double rank3 = low_rank_error(40, 30, 3, 4), full = low_rank_error(40, 6, 6, 6);
    const double rank8 = low_rank_error(40, 30, 8, 4); /* a rank-8 matrix is not exact at r = 4 */
    const double blas = low_rank_error(40, 30, 3, 20); /* r > 16: through nd_sgemm */
    print_message("  relative error: rank 3 at r 4 %.2g, rank 6 at r 6 %.2g, rank 8 at r 4 %.2g\n", rank3, full, rank8);
    assert_true(rank3 < 1e-5);
    assert_true(full < 1e-5);
    assert_true(blas < 1e-5);
    assert_true(rank8 > 1e-2);
}

/* A model of two dense layers (W 24 x 16, b 24, W 5 x 24, b 5) by hand: the
 * exchanges read only the arena, its sizes and the tensor table. */
enum { W0 = 0, B0 = 24 * 16, W1 = B0 + 24, B1 = W1 + 5 * 24, NPARAM = B1 + 5, TAIL = 3 };

static void fake_model(nd_model *m, float *grad) {
    memset(m, 0, sizeof *m);
    const struct {
        size_t off, len;
        int rows, cols;
        nd_tensor_role role;
        int layer;
    } t[] = {{W0, 24 * 16, 24, 16, ND_TENSOR_WEIGHT, 0},
             {B0, 24, 24, 0, ND_TENSOR_BIAS, 0},
             {W1, 5 * 24, 5, 24, ND_TENSOR_WEIGHT, 1},
             {B1, 5, 5, 0, ND_TENSOR_BIAS, 1}};
    for (int i = 0; i < 4; ++i) {
        nd_tensor *x = &m->tensor[i];
        snprintf(x->name, sizeof x->name, "t%d", i);
        x->span = (nd_span){t[i].off, t[i].len};
        x->ndims = t[i].cols ? 2 : 1;
        x->dims[0] = t[i].rows, x->dims[1] = t[i].cols;
        x->role = t[i].role, x->layer = t[i].layer;
    }
    m->num_tensors = 4;
    m->num_params = m->num_trainable = m->num_weights = NPARAM;
    m->grad = grad;
}

/* Rank r's gradient of step s (and its tail): any rank can compute any rank's. */
static void gradient_of(float *g, int rank, int step) {
    nd_rng rng;
    nd_rng_seed(&rng, 5, (uint64_t)rank, (uint64_t)step);
    for (int i = 0; i < NPARAM + TAIL; ++i) g[i] = (float)nd_rng_normal(&rng);
}

/* T steps of the exchange x on both ranks: every reduced gradient the same
 * on both, its tail exact, and sum of reduced + sum of residuals == sum of
 * every rank's gradients. *worst: the largest violation, *differ: whether
 * the ranks' results ever differed, *kept: nonzeros of the last result. */
static void run_exchange(const nd_exchange_part *part, const nd_train_config *cfg, double *worst, int *differ,
                         int *tail_err, size_t *kept, long long *bytes) {
    enum { T = 6 };
    const int rank = nd_comm_rank(world), size = nd_comm_size(world);
    static float grad[NPARAM + TAIL], other[NPARAM + TAIL], mine[NPARAM + TAIL], first[NPARAM + TAIL];
    static double want[NPARAM + TAIL], got[NPARAM];
    static float residuals[NPARAM];
    nd_model m;
    fake_model(&m, grad);
    nd_exchange_env env = {.model = &m, .comm = world, .cfg = cfg, .rank = rank, .size = size, .tail = TAIL, .lo = 0};
    void *self = NULL;
    nd_error err = {0};
    double phase[ND_PHASES] = {0};
    nd_clock clock;
    nd_clock_start(&clock, phase);
    memset(want, 0, sizeof want), memset(got, 0, sizeof got);
    *differ = 0, *tail_err = 0;
    assert_int_equal(part->create(&self, &env, &err), ND_OK);
    for (int s = 0; s < T; ++s) {
        double tail[TAIL] = {0};
        for (int r = 0; r < size; ++r) {
            gradient_of(other, r, s);
            for (int i = 0; i < NPARAM + TAIL; ++i) want[i] += other[i];
            for (int i = 0; i < TAIL; ++i) tail[i] += other[NPARAM + i];
        }
        gradient_of(grad, rank, s);
        if (part->reduce(self, &env, s, &clock, &err) != ND_OK) fprintf(stderr, "reduce: %s\n", err.msg);
        for (int i = 0; i < NPARAM; ++i) got[i] += grad[i];
        for (int i = 0; i < TAIL; ++i) *tail_err |= fabs(grad[NPARAM + i] - tail[i]) > 1e-5;
        memcpy(mine, grad, sizeof grad), memcpy(first, grad, sizeof grad);
        nd_comm_bcast_f32(world, first, NPARAM + TAIL, 0, &err);
        *differ |= memcmp(mine, first, sizeof grad) != 0;
    }
    memcpy(residuals, nd_feedback_residual(self), sizeof residuals);
    nd_comm_allreduce_sum_f32(world, residuals, NPARAM, &err);
    *worst = 0.0;
    for (int i = 0; i < NPARAM; ++i) {
        const double v = fabs(got[i] + residuals[i] - want[i]);
        if (v > *worst) *worst = v;
    }
    *kept = 0;
    for (int i = 0; i < NPARAM; ++i) *kept += grad[i] != 0.0f;
    *bytes = part->wire_bytes(self, &env);
    part->destroy(self);
}

static void test_topk_error_feedback(void **state) {
    (void)state;
    nd_train_config cfg;
    mpi_base_config(&cfg, "unused.h5");
    cfg.compress = ND_COMPRESS_TOPK;
    cfg.topk_ratio = 0.05f;
    double worst;
    int differ, tail_err;
    size_t kept;
    long long bytes;
    run_exchange(&nd_exchange_topk, &cfg, &worst, &differ, &tail_err, &kept, &bytes);
    const size_t k = nd_topk_count(NPARAM, 0.05);
    if (nd_comm_rank(world) == 0)
        print_message("  top-k: sum sent + residual - sum of gradients: %.3g; %zu of %d entries kept\n", worst, kept,
                      NPARAM);
    assert_true(worst < 1e-4);
    assert_false(differ);
    assert_false(tail_err);
    assert_true(kept > 0 && kept <= 2 * k);
    assert_int_equal(bytes, 6 * (8 * (long long)k + 4 * TAIL)); /* 6 steps of k pairs and the exact tail */
}

static void test_powersgd_error_feedback(void **state) {
    (void)state;
    nd_train_config cfg;
    mpi_base_config(&cfg, "unused.h5");
    cfg.compress = ND_COMPRESS_POWERSGD;
    cfg.powersgd_rank = 2;
    double worst;
    int differ, tail_err;
    size_t kept;
    long long bytes;
    run_exchange(&nd_exchange_powersgd, &cfg, &worst, &differ, &tail_err, &kept, &bytes);
    if (nd_comm_rank(world) == 0)
        print_message("  PowerSGD r=2: sum sent + residual - sum of gradients: %.3g\n", worst);
    assert_true(worst < 1e-4);
    /* 6 steps of P (24 + 5 rows) and Q (16 + 24 columns) at rank 2, the biases and the tail exact */
    assert_int_equal(bytes, 6 * 4 * ((24 + 5) * 2 + (16 + 24) * 2 + 24 + 5 + TAIL));
    assert_false(differ);
    assert_false(tail_err);
}

/* Short runs on synthetic data: each compressed exchange ends close to the
 * plain allreduce's accuracy, and replicas agree. */
static double train_acc(const nd_train_config *cfg, int *same) {
    nd_trainer *tr = NULL;
    nd_error err = {0};
    double acc = -1.0;
    *same = 0;
    if (nd_trainer_setup(&tr, cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
        const nd_train_result res = nd_trainer_result(tr);
        acc = res.last.test_acc;
        const size_t n = res.model->num_params;
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        memcpy(a, res.model->param, sizeof(float) * n), memcpy(b, a, sizeof(float) * n);
        nd_comm_bcast_f32(world, b, n, 0, &err);
        float d = memcmp(a, b, sizeof(float) * n) != 0;
        nd_comm_allreduce_sum_f32(world, &d, 1, &err);
        *same = d == 0.0f;
        free(a), free(b);
    } else if (err.msg[0]) {
        fprintf(stderr, "train failed: %s\n", err.msg);
    }
    nd_trainer_free(tr);
    return acc;
}

static void test_training_close_to_fp32(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "compress.h5");
    mpi_synth(world, path, &(nd_synth_config){2000, 1000, 0, 32, 8, 0.7f, 4, 0, 0, {0, 0, 0}});
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "32,16");
    cfg.batch = 32;
    cfg.epochs = 4;
    cfg.lr = 0.05f;
    cfg.quiet = true;
    snprintf(cfg.save, sizeof cfg.save, "none");
    double acc[3];
    int same[3];
    const nd_compress_kind kinds[3] = {ND_COMPRESS_NONE, ND_COMPRESS_TOPK, ND_COMPRESS_POWERSGD};
    for (int i = 0; i < 3; ++i) {
        cfg.compress = kinds[i];
        cfg.topk_ratio = kinds[i] == ND_COMPRESS_TOPK ? 0.05f : 0.01f; /* each its own exchange's (plan.c refuses */
        cfg.powersgd_rank = kinds[i] == ND_COMPRESS_POWERSGD ? 2 : 4;  /* them elsewhere), the defaults otherwise */
        acc[i] = train_acc(&cfg, &same[i]);
    }
    if (nd_comm_rank(world) == 0)
        print_message("  test accuracy: fp32 %.4f, top-k 5%% %.4f, PowerSGD r=2 %.4f\n", acc[0], acc[1], acc[2]);
    for (int i = 0; i < 3; ++i) assert_true(same[i]);
    assert_true(acc[0] > 0.5);
    assert_true(acc[1] > acc[0] - 0.03);
    assert_true(acc[2] > acc[0] - 0.03);
}

/* The combinations --compress refuses, each in one line naming both. */
static void test_refusals(void **state) {
    (void)state;
    nd_train_config cfg;
    nd_train_plan plan;
    nd_error err = {0};
    mpi_base_config(&cfg, "x.h5");
    cfg.compress = ND_COMPRESS_TOPK;
    assert_int_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_int_equal(plan.exchange, ND_EXCHANGE_TOPK);
    cfg.deterministic = true;
    assert_int_not_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_non_null(strstr(err.msg, "--deterministic"));
    cfg.deterministic = false, cfg.compress = ND_COMPRESS_POWERSGD, cfg.mode = ND_MODE_ASYNC;
    assert_int_not_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_non_null(strstr(err.msg, "--mode async"));
    cfg.mode = ND_MODE_SYNC, cfg.bucket_kb = 64;
    assert_int_not_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_non_null(strstr(err.msg, "--bucket-kb"));
    cfg.bucket_kb = 0, cfg.shard_optimizer = true;
    assert_int_not_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_non_null(strstr(err.msg, "--shard-optimizer"));
    cfg.shard_optimizer = false, cfg.on_nan = ND_ON_NAN_SKIP;
    assert_int_not_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_non_null(strstr(err.msg, "--on-nan skip"));
    cfg.on_nan = ND_ON_NAN_STOP, cfg.compress = ND_COMPRESS_FP16, cfg.bucket_kb = 64; /* 16-bit buckets: fine */
    assert_int_equal(nd_train_plan_resolve(&cfg, &plan, &err), ND_OK);
    assert_int_equal(plan.exchange, ND_EXCHANGE_WIRE16);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_selection_matches_sort),
        cmocka_unit_test(test_orthogonalize_gives_orthonormal_columns),
        cmocka_unit_test(test_powersgd_low_rank_is_exact),
        cmocka_unit_test(test_topk_error_feedback),
        cmocka_unit_test(test_powersgd_error_feedback),
        cmocka_unit_test(test_training_close_to_fp32),
        cmocka_unit_test(test_refusals),
    };
    return mpi_test_main(argc, argv, &world, tests, sizeof tests / sizeof tests[0], 2);
}
