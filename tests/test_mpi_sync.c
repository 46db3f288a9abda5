/* Run with `mpiexec -n 2`. Collective work comes first in every test and
 * assertions last, on values both ranks hold, so a failed check on one rank
 * can never leave the other waiting in a collective. */
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
#include "nndist/loss.h"
#include "nndist/rng.h"

static nd_comm *world;


/* Trains with cfg on comm; returns a malloc'd copy of the final parameters
 * (or NULL on failure) and the final test accuracy. Collective over comm. */
static float *train_params(const nd_train_config *cfg, nd_comm *comm, size_t *n, double *test_acc,
                           long *steps_per_epoch) {
    nd_trainer *tr = NULL;
    nd_error err = {0};
    float *out = NULL;
    if (nd_trainer_setup(&tr, cfg, comm, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK &&
        nd_trainer_write_summary(tr, &err) == ND_OK) {
        *n = nd_trainer_result(tr).model->num_params;
        out = malloc(sizeof(float) * *n);
        memcpy(out, nd_trainer_result(tr).model->param, sizeof(float) * *n);
        *test_acc = nd_trainer_result(tr).last.test_acc;
        *steps_per_epoch = nd_trainer_result(tr).steps_per_epoch;
    } else if (err.msg[0]) {
        fprintf(stderr, "train failed: %s\n", err.msg);
    }
    nd_trainer_free(tr);
    return out;
}

/* 2 ranks of batch b == 1 rank of batch 2b when the 1-rank file's rows are
 * ordered so that its batch s is rank 0's batch s followed by rank 1's. */
static void test_two_ranks_equal_one_rank_double_batch(void **state) {
    (void)state;
    enum { ROWS = 512, COLS = 12, CLASSES = 3, B = 16, TEST = 64 };
    const int rank = nd_comm_rank(world);
    char a[512], b[512];
    fx_path(a, sizeof a, "equiv-a.h5");
    fx_path(b, sizeof b, "equiv-b.h5");
    if (rank == 0) {
        float *x = malloc(sizeof(float) * (ROWS + TEST) * COLS), *xb = malloc(sizeof(float) * ROWS * COLS);
        int *y = malloc(sizeof(int) * (ROWS + TEST)), *yb = malloc(sizeof(int) * ROWS);
        fx_blobs(x, y, ROWS + TEST, COLS, CLASSES, 1.0f, 5);
        const int half = ROWS / 2;
        for (int s = 0; s < half / B; ++s)
            for (int r = 0; r < 2; ++r)
                for (int i = 0; i < B; ++i) {
                    const int src = r * half + s * B + i, dst = s * 2 * B + r * B + i;
                    memcpy(xb + dst * COLS, x + src * COLS, sizeof(float) * COLS);
                    yb[dst] = y[src];
                }
        fx_write_dataset(a, x, y, ROWS, COLS, CLASSES, x + ROWS * COLS, y + ROWS, TEST);
        fx_write_dataset(b, xb, yb, ROWS, COLS, CLASSES, x + ROWS * COLS, y + ROWS, TEST);
        free(x), free(xb), free(y), free(yb);
    }
    nd_error err = {0};
    nd_comm_barrier(world, &err);

    nd_train_config cfg;
    mpi_base_config(&cfg, a);
    snprintf(cfg.hidden, sizeof cfg.hidden, "10,8");
    cfg.shuffle = false;
    cfg.batch = B;
    cfg.epochs = 3;
    cfg.lr = 0.05f;
    cfg.warmup_steps = 10; /* exercises the scaled rate and its warmup too */
    cfg.clip_norm = 0.5f;
    cfg.weight_decay = 1e-3f;
    size_t n2 = 0, n1 = 0;
    double acc2 = 0, acc1 = 0;
    long steps2 = 0, steps1 = 0;
    float *p2 = train_params(&cfg, world, &n2, &acc2, &steps2);

    /* Replicas must be identical: compare rank 1's parameters with rank 0's. */
    float mismatch[2] = {0, 0};
    if (p2) {
        float *mine = malloc(sizeof(float) * n2);
        memcpy(mine, p2, sizeof(float) * n2);
        nd_comm_bcast_f32(world, p2, n2, 0, &err);
        mismatch[0] = memcmp(mine, p2, sizeof(float) * n2) != 0;
        free(mine);
    }

    /* Rank 0 alone, batch 2B, on the interleaved file; --ref-batch keeps the
     * peak rate equal (lr * 32 / 16 in both runs). */
    float rel = -1.0f;
    if (rank == 0) {
        nd_comm *self = NULL;
        nd_comm_self(&self, &err);
        nd_train_config one = cfg;
        snprintf(one.data, sizeof one.data, "%s", b);
        one.batch = 2 * B;
        one.ref_batch = B;
        float *p1 = train_params(&one, self, &n1, &acc1, &steps1);
        nd_comm_free(self);
        if (p1 && p2 && n1 == n2) {
            double num = 0, den = 0;
            for (size_t i = 0; i < n1; ++i) {
                num += ((double)p1[i] - p2[i]) * ((double)p1[i] - p2[i]);
                den += (double)p2[i] * p2[i];
            }
            rel = (float)sqrt(num / den);
        }
        free(p1);
        print_message("  2 ranks x %d vs 1 rank x %d: relative parameter difference %.3g after %ld steps\n", B, 2 * B,
                      (double)rel, 3 * steps1);
    }
    mismatch[1] = rel;
    nd_comm_bcast_f32(world, mismatch, 2, 0, &err);
    nd_comm_allreduce_sum_f32(world, mismatch, 1, &err); /* either rank's replica differing */
    const int trained = p2 != NULL;
    free(p2);
    assert_true(trained);
    assert_true(mismatch[0] == 0.0f);
    assert_true(mismatch[1] >= 0.0f);
    assert_true(mismatch[1] < 1e-5f);
    if (rank == 0) assert_int_equal(steps1, steps2);
}

/* A separable synthetic set on 2 ranks, uneven shards (1001 rows). */
static void test_synthetic_reaches_99_percent(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "separable.h5");
    mpi_synth(world, path, &(nd_synth_config){1001, 2000, 0, 16, 5, 3.0f, 11, 0, 0, {0, 0, 0}});
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "32");
    cfg.batch = 20;
    cfg.epochs = 8;
    size_t n = 0;
    double acc = 0;
    long steps = 0;
    float *p = train_params(&cfg, world, &n, &acc, &steps);
    const int trained = p != NULL;
    free(p);
    if (nd_comm_rank(world) == 0) print_message("  synthetic test accuracy %.4f\n", acc);
    assert_true(trained);
    assert_int_equal(steps, 500 / 20); /* the smaller shard (500 rows) sets the pace */
    assert_true(acc >= 0.99);
}

/* One server and one worker with plain SGD: staleness is always 0, so async
 * training takes exactly the steps of sync training on one rank; with
 * batch norm and dropout too (the running statistics travel as deltas). */
static void async_vs_sync(const char *arch) {
    enum { ROWS = 320, COLS = 8, CLASSES = 3, B = 16 };
    char path[512];
    fx_path(path, sizeof path, "async-equiv.h5");
    nd_error err = {0};
    if (nd_comm_rank(world) == 0) {
        float x[(ROWS + 40) * COLS];
        int y[ROWS + 40];
        fx_blobs(x, y, ROWS + 40, COLS, CLASSES, 1.0f, 8);
        fx_write_dataset(path, x, y, ROWS, COLS, CLASSES, x + ROWS * COLS, y + ROWS, 40);
    }
    nd_comm_barrier(world, &err);
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "12");
    snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
    cfg.opt = ND_OPT_SGD;
    cfg.mode = ND_MODE_ASYNC;
    cfg.shuffle = false;
    cfg.batch = B;
    cfg.epochs = 2;
    cfg.lr = 0.1f;
    size_t na = 0, ns = 0;
    double acc = 0;
    long steps = 0;
    float *pa = train_params(&cfg, world, &na, &acc, &steps);
    float diff[2] = {-1.0f, -1.0f};
    if (nd_comm_rank(world) == 0) {
        nd_comm *self = NULL;
        nd_comm_self(&self, &err);
        nd_train_config sync = cfg;
        sync.mode = ND_MODE_SYNC;
        float *ps = train_params(&sync, self, &ns, &acc, &steps);
        nd_comm_free(self);
        if (pa && ps && na == ns) {
            diff[0] = 0.0f;
            for (size_t i = 0; i < na; ++i) diff[0] = fmaxf(diff[0], fabsf(pa[i] - ps[i]));
        }
        free(ps);
    }
    diff[1] = pa != NULL;
    free(pa);
    nd_comm_bcast_f32(world, diff, 2, 0, &err);
    if (nd_comm_rank(world) == 0)
        print_message("  async (1 server, 1 worker) vs sync, arch '%s': max |difference| %g\n", arch, (double)diff[0]);
    assert_true(diff[1] == 1.0f);
    assert_true(diff[0] == 0.0f);
}

static void test_async_one_worker_equals_sync(void **state) {
    (void)state;
    async_vs_sync("");
    async_vs_sync("8:drop0.1-12:bn:relu:drop0.2-3");
}

/* One worker with --overlap: its first gradient is fresh, every later one
 * was computed one exchange before the previous update landed, so the
 * server must count staleness exactly 1 for each of them. */
static void test_async_overlap_staleness_is_one(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "async-equiv.h5"); /* written by the previous test */
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "12");
    cfg.mode = ND_MODE_ASYNC;
    cfg.overlap = true;
    cfg.batch = 16;
    cfg.epochs = 2;
    nd_trainer *tr = NULL;
    nd_error err = {0};
    double v[4] = {-1, -1, -1, -1};
    if (nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
        v[0] = (double)nd_trainer_result(tr).staleness_max;
        v[1] = (double)nd_trainer_result(tr).last.staleness_hist[0];
        v[2] = (double)nd_trainer_result(tr).last.staleness_hist[1];
        v[3] = 320.0 / 16; /* updates in the last epoch */
    }
    nd_trainer_free(tr);
    nd_comm_bcast_f64(world, v, 4, 0, &err);
    assert_true(v[0] == 1.0);
    assert_true(v[1] == 0.0);
    assert_true(v[2] == v[3]);
}

/* Collective: cfg trained straight (checkpoints in dir_a) and resumed
 * from that run's checkpoint of step `step` (into dir_b) ends with the
 * same parameters, bit for bit. */
static void expect_resume_exact(const nd_train_config *cfg, const char *dir_a, const char *dir_b, long step) {
    char mid[600];
    size_t n = 0, n2 = 0;
    double acc = 0;
    long steps = 0;
    nd_train_config a = *cfg, b = *cfg;
    snprintf(a.checkpoint_dir, sizeof a.checkpoint_dir, "%s", dir_a);
    float *straight = train_params(&a, world, &n, &acc, &steps);
    nd_checkpoint_name(mid, sizeof mid, dir_a, step);
    snprintf(b.checkpoint_dir, sizeof b.checkpoint_dir, "%s", dir_b);
    snprintf(b.resume, sizeof b.resume, "%s", mid);
    float *resumed = train_params(&b, world, &n2, &acc, &steps);
    const int same = straight && resumed && n == n2 && !memcmp(straight, resumed, sizeof(float) * n);
    const int ran = straight && resumed;
    free(straight);
    free(resumed);
    assert_true(ran);
    assert_true(same);
}

/* Stopped at a checkpoint in the middle of an epoch and resumed, a 2-rank
 * run ends with exactly the parameters of the run that never stopped
 * (batch norm's running statistics and dropout masks included). */
static void test_resume_is_bit_exact(void **state) {
    (void)state;
    char data[512], dir_a[512], dir_b[512];
    fx_path(data, sizeof data, "separable.h5"); /* written by an earlier test */
    fx_path(dir_a, sizeof dir_a, "resume-a");
    fx_path(dir_b, sizeof dir_b, "resume-b");
    nd_train_config cfg;
    mpi_base_config(&cfg, data);
    snprintf(cfg.arch, sizeof cfg.arch, "16:drop0.1-24:bn:relu:drop0.2-12:bn:elu-5");
    cfg.opt = ND_OPT_ADAM;
    cfg.lr = 0.003f;
    cfg.batch = 16;
    cfg.epochs = 3;
    cfg.warmup_steps = 20;
    cfg.keep = 100;
    cfg.checkpoint_every = 7;                    /* lands inside epochs (31 steps each) */
    cfg.ema = 0.9f;                              /* the average is saved and restored too */
    expect_resume_exact(&cfg, dir_a, dir_b, 35); /* epoch 2, 4 steps into it */
}

/* Collective: the relative L2 difference of a and b (n floats each, the
 * same on both ranks), -1 when either is missing. */
static float rel_diff(const float *a, const float *b, size_t n) {
    if (!a || !b) return -1.0f;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return (float)sqrt(num / den);
}

/* --mode local: H = 1 with plain SGD is sync mode to rounding (each rank's
 * step on its own batch's mean, then the average, is the step on the
 * global batch's mean); the replicas end equal. */
static void test_local_sgd_every_step_equals_sync(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "separable.h5"); /* written by an earlier test */
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "16");
    cfg.opt = ND_OPT_SGD;
    cfg.weight_decay = 0.0f;
    cfg.lr = 0.05f;
    cfg.batch = 16;
    cfg.epochs = 2;
    size_t n = 0, n2 = 0;
    double acc = 0;
    long steps = 0;
    float *sync = train_params(&cfg, world, &n, &acc, &steps);
    nd_train_config l = cfg;
    l.mode = ND_MODE_LOCAL;
    l.sync_every = 1;
    float *local = train_params(&l, world, &n2, &acc, &steps);
    const float rel = n == n2 ? rel_diff(local, sync, n) : -1.0f;
    float mine[2] = {0, 0}; /* rank 1's replica against rank 0's */
    nd_error err = {0};
    if (local) {
        float *theirs = malloc(sizeof(float) * n2);
        memcpy(theirs, local, sizeof(float) * n2);
        nd_comm_bcast_f32(world, theirs, n2, 0, &err);
        mine[0] = memcmp(theirs, local, sizeof(float) * n2) != 0;
        free(theirs);
    }
    nd_comm_allreduce_sum_f32(world, mine, 1, &err);
    if (nd_comm_rank(world) == 0)
        print_message("  local H=1 vs sync: relative parameter difference %.3g\n", (double)rel);
    free(sync), free(local);
    assert_true(rel >= 0.0f);
    assert_true(rel < 1e-5f);
    assert_true(mine[0] == 0.0f);
}

/* --mode local --sync-every 4 --sync-warmup 2, stepped one at a time: the
 * replicas are equal after each warm-up step, each average (every 4th step
 * after the warm-up) and the epoch's last step, and differ in between. */
static void test_local_sgd_averages_every_h(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "separable.h5");
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "16");
    cfg.mode = ND_MODE_LOCAL;
    cfg.sync_every = 4;
    cfg.sync_warmup = 2;
    cfg.batch = 16;
    cfg.epochs = 2;
    nd_trainer *tr = NULL;
    nd_error err = {0};
    const int ok = nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK;
    long wrong = 0, steps = 0, equal_seen = 0, differ_seen = 0;
    if (ok) {
        const nd_model *m = nd_trainer_result(tr).model;
        const long per_epoch = nd_trainer_result(tr).steps_per_epoch; /* 31: the epoch ends between averages */
        float *theirs = malloc(sizeof(float) * m->num_params);
        for (long done = 1; done <= per_epoch + 6; ++done, ++steps) {
            double loss;
            if (nd_trainer_step(tr, cfg.lr, &loss, &err) != ND_OK) break;
            memcpy(theirs, m->param, sizeof(float) * m->num_params);
            nd_comm_bcast_f32(world, theirs, m->num_params, 0, &err);
            float differ = memcmp(theirs, m->param, sizeof(float) * m->num_params) != 0;
            nd_comm_allreduce_sum_f32(world, &differ, 1, &err);
            const int whole = done <= 2 || (done - 2) % 4 == 0 || done % per_epoch == 0;
            wrong += whole != (differ == 0.0f);
            equal_seen += whole, differ_seen += !whole;
        }
        free(theirs);
    }
    nd_trainer_free(tr);
    assert_true(ok);
    assert_int_equal(steps, 37);
    assert_true(equal_seen > 5 && differ_seen > 5);
    assert_int_equal(wrong, 0);
}

/* The outer step (DiLoCo) with momentum ~0 and rate 1 is plain averaging
 * to rounding; with momentum and a smaller rate it is not. */
static void test_local_sgd_outer_step(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "separable.h5");
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "16");
    cfg.mode = ND_MODE_LOCAL;
    cfg.sync_every = 4;
    cfg.batch = 16;
    cfg.epochs = 2;
    size_t n[3] = {0, 0, 0};
    double acc = 0;
    long steps = 0;
    float *plain = train_params(&cfg, world, &n[0], &acc, &steps);
    nd_train_config o = cfg;
    o.outer_momentum = 1e-30f; /* takes the outer path (its buffers), adds nothing measurable */
    float *outer = train_params(&o, world, &n[1], &acc, &steps);
    o.outer_momentum = 0.5f;
    o.outer_lr = 0.7f;
    float *slow = train_params(&o, world, &n[2], &acc, &steps);
    const float same = n[0] == n[1] ? rel_diff(outer, plain, n[0]) : -1.0f;
    const float moved = n[0] == n[2] ? rel_diff(slow, plain, n[0]) : -1.0f;
    if (nd_comm_rank(world) == 0)
        print_message("  outer M=1e-30 L=1 vs plain: %.3g; M=0.5 L=0.7 vs plain: %.3g\n", (double)same, (double)moved);
    free(plain), free(outer), free(slow);
    assert_true(same >= 0.0f && same < 1e-6f);
    assert_true(moved > 1e-3f);
}

/* --mode local stopped at a checkpoint in the middle of an epoch (between
 * averages) and resumed ends with exactly the parameters of the run that
 * never stopped: the checkpoint step averages parameters and optimizer
 * state in both runs, the outer rate's global parameters restart from it. */
static void test_local_sgd_resume_is_bit_exact(void **state) {
    (void)state;
    char data[512], dir_a[512], dir_b[512];
    fx_path(data, sizeof data, "separable.h5");
    fx_path(dir_a, sizeof dir_a, "local-resume-a");
    fx_path(dir_b, sizeof dir_b, "local-resume-b");
    nd_train_config cfg;
    mpi_base_config(&cfg, data);
    snprintf(cfg.arch, sizeof cfg.arch, "16:drop0.1-24:bn:relu:drop0.2-12:bn:elu-5");
    cfg.mode = ND_MODE_LOCAL;
    cfg.sync_every = 3;
    cfg.sync_warmup = 5;
    cfg.outer_lr = 0.7f;
    cfg.opt = ND_OPT_ADAM;
    cfg.lr = 0.003f;
    cfg.batch = 16;
    cfg.epochs = 3;
    cfg.keep = 100;
    cfg.checkpoint_every = 7;                    /* lands inside epochs (31 steps each) */
    expect_resume_exact(&cfg, dir_a, dir_b, 35); /* epoch 2, 4 steps into it */
}

/* --early-stop on a noisy set with a validation split: training stops
 * before the last epoch and ends with the weights of the best epoch (the
 * final validation accuracy is the best one seen); --ema is evaluated. */
static void test_early_stop_restores_best(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "noisy-val.h5");
    nd_error err = {0};
    mpi_synth(world, path, &(nd_synth_config){3000, 500, 500, 20, 5, 0.4f, 3, 0, 0, {0, 0, 0}});
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "256,256");
    cfg.batch = 16;
    cfg.lr = 0.05f;
    cfg.epochs = 40;
    cfg.early_stop = 3;
    cfg.ema = 0.99f;
    nd_trainer *tr = NULL;
    double v[5] = {-1, -1, -1, -1, -1};
    if (nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
        v[0] = nd_trainer_result(tr).last.epoch;
        v[1] = nd_trainer_result(tr).last.val_acc;
        v[2] = nd_trainer_result(tr).best_val;
        v[3] = nd_trainer_result(tr).best_epoch;
        v[4] = nd_trainer_result(tr).last.ema_test_acc;
    }
    nd_trainer_free(tr);
    print_message("  early stop after epoch %g, best epoch %g: val %.4f (best %.4f), ema test acc %.4f\n", v[0], v[3],
                  v[1], v[2], v[4]);
    assert_true(v[0] > 0 && v[0] < 40);
    assert_true(v[3] >= 1 && v[3] <= v[0] - 3);
    assert_true(v[1] == v[2]);
    assert_true(v[4] > 0.2 && v[4] <= 1.0);
}

/* Epoch-end monitoring: a finite positive gradient norm, update/weight
 * ratios in (0, 1), dead-unit fractions in [0, 1] (0 for tanh, which is
 * never exactly 0), and activation spreads that are positive. */
static void test_monitoring_figures(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "separable.h5");
    const nd_act_kind acts[2] = {ND_ACT_RELU, ND_ACT_TANH};
    double v[2][6], phases[2] = {NAN, NAN}, seconds = NAN, smallest = NAN;
    for (int a = 0; a < 2; ++a) {
        nd_train_config cfg;
        mpi_base_config(&cfg, path);
        snprintf(cfg.hidden, sizeof cfg.hidden, "32");
        cfg.act = acts[a];
        cfg.batch = 20;
        cfg.epochs = 1;
        nd_trainer *tr = NULL;
        nd_error err = {0};
        for (int i = 0; i < 6; ++i) v[a][i] = NAN;
        if (nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK &&
            nd_trainer_result(tr).last.has_monitor) {
            v[a][0] = nd_trainer_result(tr).last.grad_norm;
            v[a][1] = nd_trainer_result(tr).last.update_ratio[0];
            v[a][2] = nd_trainer_result(tr).last.update_ratio[1];
            v[a][3] = nd_trainer_result(tr).last.dead_frac[0];
            v[a][4] = nd_trainer_result(tr).last.act_std[0];
            v[a][5] = nd_trainer_result(tr).last.act_std[1];
            if (a == 0) { /* the time breakdown: every phase took time, and they cover the epoch */
                phases[0] = 0.0, smallest = INFINITY;
                for (int p = 0; p < ND_PHASES; ++p)
                    phases[0] += nd_trainer_result(tr).last.phase[p],
                        smallest = fmin(smallest, nd_trainer_result(tr).last.phase[p]);
                seconds = nd_trainer_result(tr).last.seconds;
            }
        }
        nd_trainer_free(tr);
    }
    print_message("  relu: grad norm %.3g, update ratios %.2e %.2e, dead %.3f; tanh dead %.3f\n", v[0][0], v[0][1],
                  v[0][2], v[0][3], v[1][3]);
    for (int a = 0; a < 2; ++a) {
        assert_true(v[a][0] > 0 && isfinite(v[a][0]));
        assert_true(v[a][1] > 0 && v[a][1] < 1);
        assert_true(v[a][2] > 0 && v[a][2] < 1);
        assert_true(v[a][3] >= 0 && v[a][3] <= 1);
        assert_true(v[a][4] > 0 && v[a][5] > 0);
    }
    assert_true(v[1][3] == 0.0);
    /* Rank 0's phases within its own clock: at most the (slowest rank's)
     * epoch time, and most of it (the rest is loop and progress bookkeeping). */
    print_message("  phases sum to %.4f s of the epoch's %.4f s, smallest %.2e s\n", phases[0], seconds, smallest);
    if (nd_comm_rank(world) == 0) {
        assert_true(smallest > 0.0);
        assert_true(phases[0] <= seconds * 1.001);
        assert_true(phases[0] >= 0.5 * seconds);
    }
}

/* --max-norm holds for every neuron after training; --l1 runs with it. */
static void test_max_norm_holds(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "separable.h5");
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "32");
    cfg.batch = 20;
    cfg.epochs = 2;
    cfg.lr = 0.1f;
    cfg.max_norm = 0.5f;
    cfg.l1 = 1e-4f;
    nd_trainer *tr = NULL;
    nd_error err = {0};
    double worst = -1, acc = 0;
    if (nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
        worst = 0;
        for (int l = 0; l < nd_trainer_result(tr).model->num_layers; ++l) {
            const nd_layer *L = &nd_trainer_result(tr).model->layer[l];
            for (int r = 0; r < L->out_dim; ++r) {
                double sq = 0;
                for (int j = 0; j < L->in_dim; ++j) {
                    const double v = nd_trainer_result(tr).model->param[L->w.offset + (size_t)r * L->in_dim + j];
                    sq += v * v;
                }
                worst = fmax(worst, sqrt(sq));
            }
        }
        acc = nd_trainer_result(tr).last.test_acc;
    }
    nd_trainer_free(tr);
    print_message("  max-norm 0.5: largest neuron norm %.6f, accuracy %.4f\n", worst, acc);
    assert_true(worst > 0.0 && worst <= 0.5 + 1e-5);
    assert_true(acc > 0.9);
}

/* --output-bias priors with sigmoid_bce: each output bias is the log-odds
 * of its attribute's base rate over the whole /train (both ranks' rows),
 * so with the output weights zeroed the loss is the entropy of the base
 * rates, sum_k H(p_k), the least a constant prediction can reach. */
static void test_sigmoid_bce_priors(void **state) {
    (void)state;
    enum { K = 5 };
    char path[512];
    fx_path(path, sizeof path, "multilabel.h5");
    mpi_synth(world, path, &(nd_synth_config){601, 100, 0, 8, 2, 1.0f, 23, K, 1, {0, 0, 0}});
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    cfg.loss = ND_LOSS_SIGMOID_BCE;
    cfg.output_bias = ND_BIAS_PRIORS;
    snprintf(cfg.hidden, sizeof cfg.hidden, "6");
    snprintf(cfg.save, sizeof cfg.save, "none");
    float bias[K] = {0};
    nd_trainer *tr = NULL;
    nd_error err = {0};
    int ok = nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK;
    if (ok) {
        const nd_model *m = nd_trainer_result(tr).model;
        memcpy(bias, m->param + m->layer[m->num_layers - 1].b.offset, sizeof bias);
    } else {
        fprintf(stderr, "setup failed: %s\n", err.msg);
    }
    nd_trainer_free(tr);
    nd_shard all = {0};
    ok = ok && nd_shard_read(path, "train", 0, 1, 0, &all, &err) == ND_OK;
    assert_true(ok);
    double p[K] = {0}, entropy = 0.0, spread = 0.0;
    for (long i = 0; i < all.rows; ++i)
        for (int k = 0; k < K; ++k) p[k] += all.t[i * K + k] / (double)all.rows;
    float *out = malloc(sizeof(float) * (size_t)all.rows * K);
    for (long i = 0; i < all.rows; ++i) memcpy(out + i * K, bias, sizeof bias); /* output weights 0: z = b */
    const nd_loss_stats st = nd_loss_apply(ND_LOSS_SIGMOID_BCE, NULL, out, NULL, all.t, (int)all.rows, K);
    for (int k = 0; k < K; ++k) {
        entropy -= p[k] * log(p[k]) + (1 - p[k]) * log(1 - p[k]);
        spread = fmax(spread, fabs(p[k] - 0.5));
        print_message("  attribute %d: rate %.4f, bias %+.5f\n", k, p[k], (double)bias[k]);
        assert_float_equal(bias[k], log(p[k] / (1 - p[k])), 1e-5);
    }
    print_message("  initial loss %.8f, entropy of the rates %.8f (zero biases: %.8f)\n", st.loss_sum / all.rows,
                  entropy, K * log(2.0));
    assert_true(spread > 0.01); /* the rates are not all 1/2: zero biases would not pass */
    assert_float_equal(st.loss_sum / all.rows, entropy, 1e-6);
    free(out);
    nd_shard_free(&all);
}

/* --sync-bn's hook: the world's sum. */
static int world_sum(void *ctx, float *buf, size_t n) {
    nd_error err = {0};
    return nd_comm_allreduce_sum_f32(ctx, buf, n, &err) == ND_OK ? 0 : -1;
}

/* Batch norm over 2 ranks with --sync-bn's hook equals one rank's batch
 * norm on the joint batch: the same outputs for each rank's rows, and the
 * same summed gradient and running statistics. Without the hook, each rank
 * normalizes its own half and the outputs differ. */
static void test_sync_bn_equals_joint_batch(void **state) {
    (void)state;
    enum { IN = 9, B = 12, K = 4 };
    const int rank = nd_comm_rank(world);
    nd_model_spec spec;
    char why[128];
    nd_arch_parse("9-10:bn:relu-6:bn:tanh-4", (nd_activation){ND_ACT_RELU, 0}, &spec, why, sizeof why);
    nd_model joint, half;
    nd_error err = {0};
    nd_model_create(&joint, &spec, 2 * B, &err);
    nd_model_create(&half, &spec, 2 * B, &err);
    nd_model_init_params(&joint, 4, ND_INIT_HE);
    for (size_t i = 0; i < joint.num_params; ++i) /* shifted scale and shift, a non-trivial start */
        if (i >= joint.layer[0].bn.gamma.offset && i < joint.num_trainable) joint.param[i] += 0.01f * (float)(i % 17);
    memcpy(half.param, joint.param, sizeof(float) * joint.num_params);
    float x[2 * B * IN];
    int y[2 * B];
    nd_rng rng;
    nd_rng_seed(&rng, 8, 0, 0);
    for (int i = 0; i < 2 * B * IN; ++i) x[i] = (float)nd_rng_normal(&rng) + (i % IN);
    for (int i = 0; i < 2 * B; ++i) y[i] = (int)nd_rng_below(&rng, K);
    /* One rank's view of the joint batch. */
    const nd_train_pass local = {.seed = 1};
    nd_model_zero_grad(&joint);
    const float *oj = nd_model_forward(&joint, x, 2 * B, &local);
    nd_softmax_ce(nd_model_output_grad(&joint), oj, y, 2 * B, K);
    nd_model_backward(&joint, x, 2 * B);
    nd_model_running_deltas(&joint, joint.param, joint.grad, 2 * B, 0.1f);
    nd_model_apply_running(&joint, joint.param, joint.grad, 0, joint.num_params);
    /* Each rank its half, through the hook. */
    const float *xr = x + (size_t)rank * B * IN;
    const nd_train_pass synced = {.seed = 1, .reduce = world_sum, .reduce_ctx = world};
    nd_model_zero_grad(&half);
    const float *oh = nd_model_forward(&half, xr, B, &synced);
    double out_diff = 0.0;
    for (int i = 0; i < B * K; ++i) out_diff = fmax(out_diff, fabs(oh[i] - oj[(size_t)rank * B * K + i]));
    nd_softmax_ce(nd_model_output_grad(&half), oh, y + rank * B, B, K);
    nd_model_backward(&half, xr, B);
    nd_comm_allreduce_sum_f32(world, half.grad, half.num_params, &err);
    nd_model_running_deltas(&half, half.param, half.grad, 2 * B, 0.1f);
    nd_model_apply_running(&half, half.param, half.grad, 0, half.num_params);
    double grad_diff = 0.0, grad_max = 0.0, stat_diff = 0.0;
    for (size_t i = 0; i < joint.num_trainable; ++i) {
        grad_diff = fmax(grad_diff, fabs(half.grad[i] - joint.grad[i]));
        grad_max = fmax(grad_max, fabs(joint.grad[i]));
    }
    for (size_t i = joint.num_trainable; i < joint.num_params; ++i)
        stat_diff = fmax(stat_diff, fabs(half.param[i] - joint.param[i]));
    /* Without the hook the halves are normalized apart: different outputs. */
    const nd_train_pass apart = {.seed = 1};
    nd_model_zero_grad(&half);
    const float *oa = nd_model_forward(&half, xr, B, &apart);
    double apart_diff = 0.0;
    for (int i = 0; i < B * K; ++i) apart_diff = fmax(apart_diff, fabs(oa[i] - oj[(size_t)rank * B * K + i]));
    double v[4] = {out_diff, grad_diff / grad_max, stat_diff, -apart_diff};
    nd_comm_allreduce_max_f64(world, v, 4, &err);
    if (rank == 0)
        print_message("  sync-bn vs joint batch: outputs %.1e, gradient %.1e (relative), running stats %.1e; "
                      "without the hook outputs differ by %.2f\n",
                      v[0], v[1], v[2], -v[3]);
    nd_model_destroy(&joint);
    nd_model_destroy(&half);
    assert_true(v[0] < 1e-5);
    assert_true(v[1] < 1e-5);
    assert_true(v[2] < 1e-5);
    assert_true(-v[3] > 1e-2);
}

/* The numerical guard on 2 ranks. A NaN loss injected on rank 0 at step 9
 * stops the run there by default (every rank agrees, rank 0 alone carries
 * the line), before the bad step is applied: the weights stay finite and
 * the newest checkpoint (step 8) loads and passes its checksum. The same
 * with --shard-optimizer (caught by the global norm) and --deterministic
 * (by the fixed-point flag). With --on-nan skip the step is dropped and the
 * run ends normally; a run that diverges stops after --max-nan-skips. */
static void test_numerical_guard(void **state) {
    (void)state;
    char data[512], dir[512];
    fx_path(data, sizeof data, "separable.h5"); /* written by an earlier test */
    fx_path(dir, sizeof dir, "guard-ckpt");
    nd_train_config cfg;
    mpi_base_config(&cfg, data);
    snprintf(cfg.hidden, sizeof cfg.hidden, "16");
    cfg.batch = 20;
    cfg.epochs = 1;
    cfg.fault_nan_step = 9;
    const char *modes[3] = {"plain", "shard-optimizer", "deterministic"};
    int stopped[3] = {0}, agreed[3] = {0}, finite[3] = {0}, named[3] = {0};
    for (int v = 0; v < 3; ++v) {
        nd_train_config c = cfg;
        c.shard_optimizer = v == 1;
        c.deterministic = v == 2;
        c.micro_batches = 2;
        c.checkpoint_every = 4;
        c.keep = 100;
        snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s/%s", dir, modes[v]);
        nd_trainer *tr = NULL;
        nd_error err = {0};
        if (nd_trainer_setup(&tr, &c, world, &err) == ND_OK) {
            stopped[v] = nd_trainer_fit(tr, &err) == ND_ERR_DATA;
            agreed[v] = nd_trainer_result(tr).agreed_failure && nd_trainer_result(tr).steps == 8;
            finite[v] = 1;
            for (size_t i = 0; i < nd_trainer_result(tr).model->num_params; ++i)
                finite[v] &= isfinite(nd_trainer_result(tr).model->param[i]) != 0;
            named[v] = nd_comm_rank(world) == 0
                ? strstr(err.msg, "step 9: ") != NULL && strstr(err.msg, ": stopped before applying it")
                : err.msg[0] == '\0';
            print_message("  %s: %s\n", modes[v], err.msg);
        }
        nd_trainer_free(tr);
    }
    /* rank 0 reads the newest checkpoint of the plain run: step 8, whole */
    int loads = 1;
    if (nd_comm_rank(world) == 0) {
        char plain_ckpt[700];
        snprintf(plain_ckpt, sizeof plain_ckpt, "%s/plain/ckpt-step00000008.h5", dir);
        nd_model m;
        nd_model_spec spec;
        int widths[1] = {16};
        nd_model_spec_plain(&spec, 16, widths, 1, (nd_activation){ND_ACT_RELU, 0}, 5);
        nd_error err = {0};
        nd_optimizer opt;
        nd_opt_config oc = {.kind = ND_OPT_MOMENTUM};
        float mean[16], inv[16];
        nd_ckpt_info info;
        loads = nd_model_create(&m, &spec, 20, &err) == ND_OK &&
            nd_optimizer_create(&opt, &oc, m.num_params, &err) == ND_OK &&
            nd_checkpoint_read(plain_ckpt, &m, &opt, mean, inv, NULL, &info, &err) == ND_OK && info.meta.step == 8;
        if (!loads) print_message("  checkpoint: %s\n", err.msg);
        nd_model_destroy(&m);
        nd_optimizer_destroy(&opt);
    }
    /* --on-nan skip: dropped, counted, the run ends */
    nd_train_config skip = cfg;
    skip.on_nan = ND_ON_NAN_SKIP;
    nd_trainer *tr = NULL;
    nd_error err = {0};
    long skips = -1;
    int skip_ok = 0;
    if (nd_trainer_setup(&tr, &skip, world, &err) == ND_OK) {
        skip_ok = nd_trainer_fit(tr, &err) == ND_OK &&
            nd_trainer_result(tr).steps == nd_trainer_result(tr).steps_per_epoch;
        skips = nd_trainer_result(tr).nan_skips;
    }
    nd_trainer_free(tr);
    /* divergence (a huge rate): every step bad after the first few */
    skip.fault_nan_step = 0;
    skip.lr = 1e6f;
    skip.max_nan_skips = 3;
    int diverged = 0;
    if (nd_trainer_setup(&tr, &skip, world, &err) == ND_OK)
        diverged = nd_trainer_fit(tr, &err) == ND_ERR_DATA && nd_trainer_result(tr).nan_consecutive == 4 &&
            (nd_comm_rank(world) != 0 || strstr(err.msg, "4 bad steps in a row (--max-nan-skips 3)") != NULL);
    print_message("  skip: %ld skipped; divergence: %s\n", skips, err.msg);
    nd_trainer_free(tr);
    for (int v = 0; v < 3; ++v) {
        assert_true(stopped[v]);
        assert_true(agreed[v]);
        assert_true(finite[v]);
        assert_true(named[v]);
    }
    assert_true(loads);
    assert_true(skip_ok);
    assert_int_equal(skips, 1);
    assert_true(diverged);
}

/* --opt lbfgs: the full-batch objective and gradient do not depend on the
 * rank count (up to the order of summation), so 2 ranks and 1 rank take the
 * same L-BFGS steps: a linear softmax model from zero weights ends at the
 * same training loss to 1e-6 relative, and well below the start (ln 3). */
static void test_lbfgs_rank_count_independent(void **state) {
    (void)state;
    enum { ROWS = 301, COLS = 10, CLASSES = 3, TEST = 40 };
    char path[512];
    fx_path(path, sizeof path, "lbfgs.h5");
    nd_error err = {0};
    if (nd_comm_rank(world) == 0) {
        float x[(ROWS + TEST) * COLS];
        int y[ROWS + TEST];
        fx_blobs(x, y, ROWS + TEST, COLS, CLASSES, 0.7f, 21); /* overlapping: the loss stays above 0 */
        fx_write_dataset(path, x, y, ROWS, COLS, CLASSES, x + ROWS * COLS, y + ROWS, TEST);
    }
    nd_comm_barrier(world, &err);
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "%s", "");
    cfg.init = ND_INIT_ZERO;
    cfg.opt = ND_OPT_LBFGS;
    cfg.lr = 1.0f;
    cfg.lbfgs_max_iter = 4;
    cfg.lbfgs_history = 3; /* the ring wraps */
    cfg.weight_decay = 1e-2f;
    cfg.epochs = 3; /* 12 iterations: far from the optimum, where rounding would pick the stopping point */
    double loss[2] = {NAN, NAN}, steps[2] = {0, 0};
    for (int one = 0; one < 2; ++one) {
        nd_comm *comm = world, *self = NULL;
        if (one && nd_comm_rank(world) != 0) break;
        if (one) nd_comm_self(&self, &err), comm = self;
        nd_trainer *tr = NULL;
        if (nd_trainer_setup(&tr, &cfg, comm, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
            loss[one] = nd_trainer_result(tr).last.train_loss;
            steps[one] = (double)nd_trainer_result(tr).steps;
        } else {
            fprintf(stderr, "lbfgs run failed: %s\n", err.msg);
        }
        nd_trainer_free(tr);
        if (self) nd_comm_free(self);
    }
    nd_comm_bcast_f64(world, loss, 2, 0, &err);
    nd_comm_bcast_f64(world, steps, 2, 0, &err);
    if (nd_comm_rank(world) == 0)
        print_message("  lbfgs train loss: 2 ranks %.9f (%.0f iterations), 1 rank %.9f (%.0f)\n", loss[0], steps[0],
                      loss[1], steps[1]);
    assert_true(steps[0] == 12 && steps[1] == 12);
    assert_true(loss[0] < log(3.0) - 0.2);
    assert_true(fabs(loss[0] - loss[1]) <= 1e-6 * loss[1]);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_ranks_equal_one_rank_double_batch),
        cmocka_unit_test(test_synthetic_reaches_99_percent),
        cmocka_unit_test(test_async_one_worker_equals_sync),
        cmocka_unit_test(test_async_overlap_staleness_is_one),
        cmocka_unit_test(test_resume_is_bit_exact),
        cmocka_unit_test(test_local_sgd_every_step_equals_sync),
        cmocka_unit_test(test_local_sgd_averages_every_h),
        cmocka_unit_test(test_local_sgd_outer_step),
        cmocka_unit_test(test_local_sgd_resume_is_bit_exact),
        cmocka_unit_test(test_early_stop_restores_best),
        cmocka_unit_test(test_monitoring_figures),
        cmocka_unit_test(test_max_norm_holds),
        cmocka_unit_test(test_sigmoid_bce_priors),
        cmocka_unit_test(test_sync_bn_equals_joint_batch),
        cmocka_unit_test(test_numerical_guard),
        cmocka_unit_test(test_lbfgs_rank_count_independent),
    };
    return mpi_test_main(argc, argv, &world, tests, sizeof tests / sizeof tests[0], 2);
}
