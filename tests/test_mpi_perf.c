/* The performance paths of sync training must not change the numbers.
 * Run with `mpiexec -n 2`: with two ranks every element of a sum is a + b
 * whatever the algorithm, so the bucketed allreduce and ZeRO-1's
 * reduce-scatter must give bit-identical training to one allreduce.
 * Collective work first in every test, assertions last. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "mpi_fixture.h"
#include "nndist/checkpoint.h"
#include "nndist/half.h"
#include "../src/run/exchange.h"

static nd_comm *world;

typedef struct {
    float *param; /* malloc'd copy of the final parameters, NULL on failure */
    size_t n;
    long buckets;     /* buckets started in the run (0 without buckets) */
    size_t state;     /* optimizer state floats on this rank */
    double grad_norm; /* at the last epoch's end */
    double test_acc;
} run_result;

static run_result train(const nd_train_config *cfg) {
    nd_trainer *tr = NULL;
    nd_error err = {0};
    run_result r = {0};
    if (nd_trainer_setup(&tr, cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
        r.n = nd_trainer_result(tr).model->num_params;
        r.param = malloc(sizeof(float) * r.n);
        memcpy(r.param, nd_trainer_result(tr).model->param, sizeof(float) * r.n);
        r.buckets = nd_trainer_result(tr).gradient_buckets;
        r.state = (size_t)nd_trainer_result(tr).optimizer_state_floats;
        r.grad_norm = nd_trainer_result(tr).last.grad_norm;
        r.test_acc = nd_trainer_result(tr).last.test_acc;
    } else if (err.msg[0]) {
        fprintf(stderr, "train failed: %s\n", err.msg);
    }
    nd_trainer_free(tr);
    return r;
}

static double max_rel_diff(const run_result *a, const run_result *b) {
    if (!a->param || !b->param || a->n != b->n) return INFINITY;
    double worst = 0.0;
    for (size_t i = 0; i < a->n; ++i)
        worst = fmax(worst, fabs((double)a->param[i] - b->param[i]) / (fabs((double)a->param[i]) + 1e-3));
    return worst;
}

/* Both runs finished with bitwise equal parameters. */
static int same_params(const run_result *a, const run_result *b) {
    return a->param && b->param && a->n == b->n && !memcmp(a->param, b->param, sizeof(float) * a->n);
}

/* cfg, resumed from its checkpoint of step `step` in dir and writing none. */
static nd_train_config resumed_from(const nd_train_config *cfg, const char *dir, long step) {
    nd_train_config b = *cfg;
    char path[600];
    nd_checkpoint_name(path, sizeof path, dir, step);
    b.checkpoint_dir[0] = '\0';
    b.checkpoint_every = 0;
    snprintf(b.resume, sizeof b.resume, "%s", path);
    return b;
}

static void base(nd_train_config *cfg, const char *data) {
    mpi_base_config(cfg, data);
    /* batch norm and dropout: the statistics region and the loss tail ride
     * in the first bucket / the small allreduce */
    snprintf(cfg->arch, sizeof cfg->arch, "16:drop0.1-48:bn:relu:drop0.2-24:relu-5");
    cfg->batch = 24;
    cfg->epochs = 2;
}

static void test_buckets_equal_one_allreduce(void **state) {
    (void)state;
    char data[512];
    fx_path(data, sizeof data, "perf.h5");
    mpi_synth(world, data, &(nd_synth_config){1200, 300, 0, 16, 5, 2.0f, 3, 0, 0, {0, 0, 0}});
    nd_train_config cfg;
    base(&cfg, data);
    /* wide enough that the 512x512 layer's weight gradient is computed in
     * four blocks (ND_GRAD_BLOCK_FLOATS), with and without buckets */
    snprintf(cfg.arch, sizeof cfg.arch, "16:drop0.1-512:bn:relu:drop0.2-512:relu-5");
    run_result one = train(&cfg);
    cfg.bucket_kb = 1; /* 256 floats: a bucket at every block */
    run_result many = train(&cfg);
    const long steps = 2 * (600 / 24);
    print_message("  %ld buckets in %ld steps, max relative difference %.3g\n", many.buckets, steps,
                  max_rel_diff(&one, &many));
    const int same = same_params(&one, &many);
    free(one.param), free(many.param);
    assert_true(same);
    assert_int_equal(one.buckets, 0);
    assert_true(many.buckets >= 7 * steps); /* statistics, output layer, 4 blocks, first layer */
}

/* The node's shared-memory sum (the plain exchange's way on one node):
 * bitwise MPI_Allreduce's sum over [lo, hi), nothing outside it touched,
 * twice in a row on the same buffers; a one-rank communicator gets none. */
static void test_node_sum_equals_allreduce(void **state) {
    (void)state;
    enum { N = 70001, LO = 37, HI = 69990 }; /* shares that do not end on cache lines */
    const int rank = nd_comm_rank(world);
    nd_error err = {0};
    nd_node_sum *sum = NULL;
    const nd_status made = nd_node_sum_create(world, N, &sum, &err);
    float *want = malloc(sizeof(float) * N);
    int mismatches = 0, outside = 0, zeroed = 1;
    nd_status st = made;
    if (sum) {
        float *buf = nd_node_sum_buffer(sum);
        for (int i = 0; i < N; ++i) zeroed &= buf[i] == 0.0f;
        for (int round = 0; round < 2 && st == ND_OK; ++round) {
            for (int i = 0; i < N; ++i) /* values whose sum rounds */
                buf[i] = want[i] = (float)(((i * 7919 + rank * 104729 + round * 31) % 1000) - 500) / 3.0f;
            st = nd_comm_allreduce_sum_f32(world, want + LO, HI - LO, &err);
            if (st == ND_OK) st = nd_node_sum_arrive(sum, round, "test", &err);
            if (st == ND_OK) st = nd_node_sum_reduce(sum, LO, HI, round, &err);
            for (int i = 0; i < N; ++i) {
                if (i >= LO && i < HI) mismatches += memcmp(&buf[i], &want[i], sizeof(float)) != 0;
                else outside += buf[i] != want[i]; /* still this rank's own value */
            }
        }
    }
    nd_node_sum_free(sum);
    nd_comm *self = NULL;
    nd_node_sum *lone = NULL;
    if (nd_comm_self(&self, &err) == ND_OK) nd_node_sum_create(self, N, &lone, &err);
    nd_comm_free(self);
    free(want);
    print_message("  shared-memory sum on %d ranks of one node: %s\n", nd_comm_size(world), sum ? "made" : "not made");
    assert_int_equal(made, ND_OK);
    assert_non_null(sum); /* mpiexec -n 2 on one machine */
    assert_true(zeroed);
    assert_int_equal(st, ND_OK);
    assert_int_equal(mismatches, 0);
    assert_int_equal(outside, 0);
    assert_null(lone);
}

/* ZeRO-1: the same training as plain sync (AdamW with decay on a mask,
 * L1 over slices), half the optimizer state per rank; with a norm clip the
 * global norm is summed from the slices, so equal to rounding. */
static void test_shard_optimizer_equals_plain(void **state) {
    (void)state;
    char data[512];
    fx_path(data, sizeof data, "perf.h5"); /* written by the test above */
    nd_train_config cfg;
    base(&cfg, data);
    cfg.opt = ND_OPT_ADAMW;
    cfg.lr = 0.003f;
    cfg.weight_decay = 0.01f;
    cfg.l1 = 1e-4f;
    run_result plain = train(&cfg);
    cfg.shard_optimizer = true;
    run_result zero = train(&cfg);
    nd_train_config clip = cfg;
    clip.opt = ND_OPT_MOMENTUM;
    clip.l1 = 0.0f;
    clip.clip_norm = 0.5f;
    clip.shard_optimizer = false;
    run_result clip_plain = train(&clip);
    clip.shard_optimizer = true;
    run_result clip_zero = train(&clip);
    const int same = same_params(&plain, &zero);
    const double d = max_rel_diff(&clip_plain, &clip_zero);
    print_message("  adamw state %zu -> %zu floats per rank; clipped momentum: max relative difference %.3g, "
                  "grad norm %.6g vs %.6g\n",
                  plain.state, zero.state, d, clip_plain.grad_norm, clip_zero.grad_norm);
    free(plain.param), free(zero.param), free(clip_plain.param), free(clip_zero.param);
    assert_true(same);
    assert_true(zero.state * 2 <= plain.state + 2 && zero.state * 2 >= plain.state - 2);
    assert_true(d < 1e-4);
    assert_true(fabs(clip_plain.grad_norm - clip_zero.grad_norm) <= 1e-5 * clip_plain.grad_norm);
}

/* A checkpoint of sharded state holds the whole state: resumed without
 * sharding (and with it) mid-run, training ends where the uninterrupted
 * sharded run ends. */
static void test_shard_optimizer_checkpoint_resumes(void **state) {
    (void)state;
    char data[512], dir[512];
    fx_path(data, sizeof data, "perf.h5");
    fx_path(dir, sizeof dir, "zero-ckpt");
    nd_train_config cfg;
    base(&cfg, data);
    cfg.opt = ND_OPT_ADAM;
    cfg.lr = 0.003f;
    cfg.shard_optimizer = true;
    cfg.keep = 100;
    cfg.checkpoint_every = 9; /* inside epoch 1 (25 steps) */
    snprintf(cfg.checkpoint_dir, sizeof cfg.checkpoint_dir, "%s", dir);
    run_result straight = train(&cfg);
    nd_train_config b = resumed_from(&cfg, dir, 18);
    run_result resumed_zero = train(&b);
    b.shard_optimizer = false;
    run_result resumed_plain = train(&b);
    const int same_zero = same_params(&straight, &resumed_zero), same_plain = same_params(&straight, &resumed_plain);
    free(straight.param), free(resumed_zero.param), free(resumed_plain.param);
    assert_true(same_zero);
    assert_true(same_plain);
}

/* --stream-mb: in file order (no shuffle) the windows give exactly the
 * in-memory run's batches, so the runs are bit-identical; with shuffling
 * (the short last window anywhere in the order) a run resumed mid-epoch,
 * inside a window that is not the first, ends bit-identical to the
 * straight streamed run. */
static void test_streaming_equals_memory_and_resumes(void **state) {
    (void)state;
    char data[512], dir[512];
    fx_path(data, sizeof data, "perf.h5");
    fx_path(dir, sizeof dir, "stream-ckpt");
    nd_train_config cfg;
    base(&cfg, data);
    cfg.shuffle = false;
    cfg.batch = 32;
    run_result memory = train(&cfg);
    /* windows of 64 rows (5 KiB of 68-byte rows, floored to whole batches):
     * 9 per rank and a tenth of 24 rows that holds no batch and is skipped */
    cfg.stream_mb = 0.01f;
    run_result streamed = train(&cfg);
    nd_trainer *probe = NULL;
    nd_error err = {0};
    int windows = -1;
    if (nd_trainer_setup(&probe, &cfg, world, &err) == ND_OK) windows = nd_trainer_result(probe).stream_windows;
    nd_trainer_free(probe);
    const int same = same_params(&memory, &streamed);
    cfg.shuffle = true;
    cfg.keep = 100;
    cfg.checkpoint_every = 7; /* step 7 is the second batch of epoch 1's fourth window */
    snprintf(cfg.checkpoint_dir, sizeof cfg.checkpoint_dir, "%s", dir);
    run_result straight = train(&cfg);
    nd_train_config b = resumed_from(&cfg, dir, 7);
    run_result resumed = train(&b);
    const int same_resume = same_params(&straight, &resumed);
    const double moved = max_rel_diff(&memory, &straight); /* shuffled differs from file order */
    free(memory.param), free(streamed.param), free(straight.param), free(resumed.param);
    assert_int_equal(windows, 10);
    assert_true(same);
    assert_true(same_resume);
    assert_true(moved > 1e-3 && isfinite(moved));
}

/* The 16-bit exchange on a bare gradient arena of TRAIN trainable floats,
 * STATS statistics and a TAIL, driven as a step drives it (bucketed: the
 * blocks handed over last first, as backward does). Rank r's gradient is
 * the sequence of seed r, scaled by `big` at index 7. Fills sum (TOTAL) and
 * *bad (bad_step's verdict); 0 when the exchange failed. */
enum { TRAIN = 1001, STATS = 3, TAIL = 4, TOTAL = TRAIN + STATS + TAIL };

static void wire_input(float *g, int rank, float big) {
    srand(100 + (unsigned)rank);
    for (int i = 0; i < TOTAL; ++i) g[i] = ((float)rand() / (float)RAND_MAX - 0.5f) * ldexpf(1.0f, rand() % 24 - 12);
    g[7] = big;
    for (int i = TRAIN; i < TOTAL; ++i) g[i] += 1000.0f * (float)rank; /* an exact part 16 bits would round */
}

static int wire_exchange(nd_compress_kind compress, int bucket_kb, float big, float *sum, int *bad) {
    static nd_model m;
    memset(&m, 0, sizeof m);
    m.num_params = TRAIN + STATS;
    m.num_trainable = TRAIN;
    m.grad = sum;
    nd_train_config cfg;
    mpi_base_config(&cfg, "unused.h5");
    cfg.compress = compress;
    cfg.bucket_kb = bucket_kb;
    const nd_exchange_env env = {.model = &m,
                                 .comm = world,
                                 .cfg = &cfg,
                                 .rank = nd_comm_rank(world),
                                 .size = nd_comm_size(world),
                                 .tail = TAIL};
    const nd_exchange_part *xp = &nd_exchange_wire16;
    void *self = NULL;
    nd_error err = {0};
    double phase[ND_PHASES] = {0};
    nd_clock clock;
    nd_clock_start(&clock, phase);
    wire_input(sum, env.rank, big);
    int ok = xp->create(&self, &env, &err) == ND_OK;
    for (int step = 0; ok && step < 2; ++step) { /* twice: the second step reuses the buffers */
        wire_input(sum, env.rank, big);
        nd_train_pass pass = {0};
        xp->attach(self, &env, &pass);
        xp->forward_done(self, &env);
        if (pass.grad_ready)
            for (long lo = TRAIN - 100; lo >= 0; lo -= 100) pass.grad_ready(pass.ready_ctx, (size_t)lo);
        ok = xp->reduce(self, &env, step, &clock, &err) == ND_OK;
    }
    char what[200];
    *bad = ok && xp->bad_step(self, what, sizeof what);
    if (!ok) fprintf(stderr, "wire exchange failed: %s\n", err.msg);
    if (ok && env.rank == 0 && bucket_kb)
        print_message("  %s, %d KiB buckets: %ld buckets in 2 steps, %lld bytes sent\n",
                      compress == ND_COMPRESS_FP16 ? "fp16" : "bf16", bucket_kb, xp->messages(self),
                      xp->wire_bytes(self, &env));
    xp->destroy(self);
    return ok;
}

/* --compress fp16|bf16 on 2 ranks: each value is the fp32 sum of the two
 * ranks' 16-bit values, rounded once to 16 bits (fp16: of the halves,
 * times 2); the statistics and the tail are the exact fp32 sums;
 * blocking and bucketed alike. fp16 keeps a sum beyond 65504 whose mean
 * fits, and flags one whose mean does not. */
static void test_wire16_rounds_the_fp32_sum_once(void **state) {
    (void)state;
    static float got[TOTAL], a[TOTAL], b[TOTAL];
    wire_input(a, 0, 60000.0f);
    wire_input(b, 1, 60000.0f);
    int checked = 0, bad = 0, failed = 0;
    for (int k = 0; k < 4; ++k) {
        const nd_compress_kind kind = k % 2 ? ND_COMPRESS_BF16 : ND_COMPRESS_FP16;
        if (!wire_exchange(kind, k / 2 ? 1 : 0, 60000.0f, got, &bad) || bad) {
            failed += 1;
            continue;
        }
        for (int i = 0; i < TRAIN; ++i) {
            float want;
            if (kind == ND_COMPRESS_FP16) {
                const float s = nd_fp16_to_f32(nd_f32_to_fp16(a[i] * 0.5f)) +
                    nd_fp16_to_f32(nd_f32_to_fp16(b[i] * 0.5f));
                want = nd_fp16_to_f32(nd_f32_to_fp16(s)) * 2.0f;
            } else {
                const float s = nd_bf16_to_f32(nd_f32_to_bf16(a[i])) + nd_bf16_to_f32(nd_f32_to_bf16(b[i]));
                want = nd_bf16_to_f32(nd_f32_to_bf16(s));
            }
            failed += got[i] != want;
        }
        for (int i = TRAIN; i < TOTAL; ++i) failed += got[i] != a[i] + b[i];
        checked += 1;
    }
    /* 70000 on both ranks: a mean beyond fp16's range */
    int over_bad = 0, over_bucketed_bad = 0;
    const int over_ok = wire_exchange(ND_COMPRESS_FP16, 0, 70000.0f, got, &over_bad) &&
        wire_exchange(ND_COMPRESS_FP16, 1, 70000.0f, got, &over_bucketed_bad);
    assert_int_equal(failed, 0);
    assert_int_equal(checked, 4);
    assert_true(over_ok);
    assert_true(over_bad && over_bucketed_bad);
}

/* Training with bf16 (and fp16) on the wire: close to fp32's accuracy;
 * the bucketed exchange gives the bits of the blocking one (each value is
 * summed alike whatever bucket it is in). */
static void test_wire16_trains_like_fp32(void **state) {
    (void)state;
    char data[512];
    fx_path(data, sizeof data, "wire.h5");
    /* classes that overlap: an accuracy short of 1 that rounding could move */
    mpi_synth(world, data, &(nd_synth_config){2400, 600, 0, 16, 5, 0.6f, 4, 0, 0, {0, 0, 0}});
    nd_train_config cfg;
    base(&cfg, data);
    cfg.epochs = 3;
    run_result fp32 = train(&cfg);
    cfg.compress = ND_COMPRESS_BF16;
    run_result bf16 = train(&cfg);
    cfg.bucket_kb = 1;
    run_result bf16_buckets = train(&cfg);
    cfg.compress = ND_COMPRESS_FP16;
    run_result fp16_buckets = train(&cfg);
    const int same = same_params(&bf16, &bf16_buckets);
    const double moved = max_rel_diff(&fp32, &bf16);
    print_message("  test accuracy fp32 %.4f, bf16 %.4f, bf16 bucketed %.4f, fp16 bucketed %.4f; bf16 vs fp32 "
                  "parameters: max relative difference %.3g\n",
                  fp32.test_acc, bf16.test_acc, bf16_buckets.test_acc, fp16_buckets.test_acc, moved);
    free(fp32.param), free(bf16.param), free(bf16_buckets.param), free(fp16_buckets.param);
    assert_true(same);
    assert_true(moved > 0.0 && isfinite(moved)); /* rounded: not the fp32 run */
    assert_true(fp32.test_acc > 0.5 && fp32.test_acc < 0.99);
    assert_true(fabs(bf16.test_acc - fp32.test_acc) <= 0.02);
    assert_true(fabs(fp16_buckets.test_acc - fp32.test_acc) <= 0.02);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_sum_equals_allreduce),
        cmocka_unit_test(test_buckets_equal_one_allreduce),
        cmocka_unit_test(test_shard_optimizer_equals_plain),
        cmocka_unit_test(test_shard_optimizer_checkpoint_resumes),
        cmocka_unit_test(test_streaming_equals_memory_and_resumes),
        cmocka_unit_test(test_wire16_rounds_the_fp32_sum_once),
        cmocka_unit_test(test_wire16_trains_like_fp32),
    };
    return mpi_test_main(argc, argv, &world, tests, sizeof tests / sizeof tests[0], 2);
}
