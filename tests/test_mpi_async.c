/* Run with `mpiexec -n 4`: parameter servers with K = 2 (the arena split in
 * two slices and reassembled), a straggling worker, uneven shards, and the
 * ssp staleness bound. Collective work first, assertions after, on values
 * every rank holds. */
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

static nd_comm *world;

typedef struct {
    int ok;
    long hist[ND_STALENESS_BUCKETS]; /* last epoch's staleness histogram */
    double test_acc;
    long staleness_max, samples;
    int identical;    /* every rank ends with the same parameters */
    int applied_once; /* every server applied exactly the updates the workers sent */
} outcome;

static outcome run(nd_mode_kind mode, int servers, int max_staleness, const char *straggle, int overlap) {
    char path[512];
    fx_path(path, sizeof path, "async.h5");
    nd_error err = {0};
    mpi_synth(world, path,
              &(nd_synth_config){1001, 1000, 0, 16, 5, 3.0f, 21, 0, 0, {0, 0, 0}}); /* 1001 rows: uneven shards */
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    cfg.mode = mode;
    snprintf(cfg.hidden, sizeof cfg.hidden, "32");
    snprintf(cfg.straggle, sizeof cfg.straggle, "%s", straggle);
    cfg.servers = servers;
    cfg.max_staleness = max_staleness;
    cfg.overlap = overlap;
    cfg.batch = 20;
    cfg.epochs = 4;
    outcome o = {0};
    nd_trainer *tr = NULL;
    if (nd_trainer_setup(&tr, &cfg, world, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
        o.ok = 1;
        o.test_acc = nd_trainer_result(tr).last.test_acc;
        o.staleness_max = nd_trainer_result(tr).staleness_max;
        o.samples = nd_trainer_result(tr).samples_seen;
        memcpy(o.hist, nd_trainer_result(tr).last.staleness_hist, sizeof o.hist);
        double h[ND_STALENESS_BUCKETS];
        for (int i = 0; i < ND_STALENESS_BUCKETS; ++i) h[i] = (double)o.hist[i];
        nd_comm_bcast_f64(world, h, ND_STALENESS_BUCKETS, 0, &err); /* server 0 keeps the books */
        for (int i = 0; i < ND_STALENESS_BUCKETS; ++i) o.hist[i] = (long)h[i];
        float *copy = malloc(sizeof(float) * nd_trainer_result(tr).model->num_params);
        memcpy(copy, nd_trainer_result(tr).model->param, sizeof(float) * nd_trainer_result(tr).model->num_params);
        nd_comm_bcast_f32(world, copy, nd_trainer_result(tr).model->num_params, 0, &err);
        /* Updates sent (summed over workers) against each server's count. */
        const int server = nd_trainer_result(tr).worker_index < 0;
        double counts[2] = {server ? 0.0 : (double)nd_trainer_result(tr).steps,
                            server ? (double)nd_trainer_result(tr).steps : 0.0};
        double lo[1] = {server ? (double)nd_trainer_result(tr).steps : 1e300},
               hi[1] = {server ? (double)nd_trainer_result(tr).steps : -1e300};
        nd_comm_allreduce_sum_f64(world, counts, 1, &err);
        nd_comm_allreduce_max_f64(world, hi, 1, &err);
        lo[0] = -lo[0];
        nd_comm_allreduce_max_f64(world, lo, 1, &err);
        o.applied_once = counts[0] == hi[0] && counts[0] == -lo[0] && counts[0] * 20 == (double)o.samples;
        float same = memcmp(copy, nd_trainer_result(tr).model->param,
                            sizeof(float) * nd_trainer_result(tr).model->num_params) == 0;
        float all[1] = {same ? 0.0f : 1.0f};
        nd_comm_allreduce_sum_f32(world, all, 1, &err);
        o.identical = all[0] == 0.0f;
        free(copy);
    } else if (err.msg[0]) {
        fprintf(stderr, "rank %d: %s\n", nd_comm_rank(world), err.msg);
    }
    nd_trainer_free(tr);
    return o;
}

static void test_two_servers_straggler_uneven(void **state) {
    (void)state;
    outcome o = run(ND_MODE_ASYNC, 2, 0, "3:3", 0);
    print_message("  async K=2, W=2, rank 3 straggling x3: accuracy %.4f, max staleness %ld, %ld samples\n", o.test_acc,
                  o.staleness_max, o.samples);
    assert_true(o.ok);
    assert_true(o.identical);
    assert_true(o.applied_once);
    assert_true(o.test_acc >= 0.99);
    /* 4 epochs of 1001 rows: at least that many samples, at most W-1 = 1
     * batch more (the update in flight when the end was decided). */
    assert_true(o.samples >= 4 * 1001 && o.samples <= 4 * 1001 + 20 + 20);
}

static void test_ssp_bounds(void **state) {
    (void)state;
    /* With W workers and bound s, a gradient's staleness is at most
     * (W - 1) * (2s + 1): see README. Here W = 3 (one server). */
    outcome o0 = run(ND_MODE_SSP, 1, 0, "1:20", 0);
    outcome o2 = run(ND_MODE_SSP, 1, 2, "1:20", 0);
    outcome oa = run(ND_MODE_ASYNC, 1, 0, "1:20", 0);
    print_message("  max staleness with a x20 straggler: ssp s=0 %ld, ssp s=2 %ld, async %ld\n", o0.staleness_max,
                  o2.staleness_max, oa.staleness_max);
    assert_true(o0.ok && o2.ok && oa.ok);
    assert_true(o0.staleness_max <= 2 * 1);
    assert_true(o2.staleness_max <= 2 * 5);
    assert_true(oa.staleness_max > o0.staleness_max); /* the bound is what keeps it low */
}

/* ssp with s = 0 moves the 3 workers in lock-step: in every clock they all
 * read the same version, so the gradients applied carry staleness 0, 1 and
 * 2 exactly once each (an epoch may cut one clock: +-1). */
static void test_ssp_lockstep_staleness_schedule(void **state) {
    (void)state;
    outcome o = run(ND_MODE_SSP, 1, 0, "2:2", 0);
    print_message("  ssp s=0, 3 workers, last epoch's staleness counts: %ld %ld %ld %ld\n", o.hist[0], o.hist[1],
                  o.hist[2], o.hist[3]);
    assert_true(o.ok);
    assert_true(o.hist[0] > 10);
    assert_true(labs(o.hist[0] - o.hist[1]) <= 1 && labs(o.hist[1] - o.hist[2]) <= 1);
    for (int i = 3; i < ND_STALENESS_BUCKETS; ++i) assert_int_equal(o.hist[i], 0);
}

/* --overlap: two servers, a straggler, the next gradient computed while the
 * exchange is in flight. Learns, ends cleanly, replicas agree. */
static void test_overlap_two_servers(void **state) {
    (void)state;
    outcome o = run(ND_MODE_ASYNC, 2, 0, "2:3", 1);
    print_message("  async --overlap K=2: accuracy %.4f, max staleness %ld\n", o.test_acc, o.staleness_max);
    assert_true(o.ok);
    assert_true(o.identical);
    assert_true(o.applied_once);
    assert_true(o.test_acc >= 0.99);
    assert_true(o.staleness_max >= 1);
}

/* Three of the four ranks: K = 2 servers and one worker with plain SGD.
 * Staleness is 0, so the split arena, updated slice by slice and put back
 * together, must equal sync training on one rank bit for bit. */
static void test_two_servers_reassemble_exactly(void **state) {
    (void)state;
    const int rank = nd_comm_rank(world);
    char path[512];
    fx_path(path, sizeof path, "async3.h5");
    nd_error err = {0};
    mpi_synth(world, path, &(nd_synth_config){640, 100, 0, 10, 3, 1.0f, 4, 0, 0, {0, 0, 0}});
    nd_comm *three = NULL;
    nd_comm_split(world, rank < 3 ? 0 : -1, &three, &err);
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.hidden, sizeof cfg.hidden, "9,7");
    cfg.opt = ND_OPT_SGD;
    cfg.shuffle = false;
    cfg.batch = 16;
    cfg.epochs = 2;
    float *async_params = NULL;
    size_t n = 0;
    if (three) {
        nd_train_config a = cfg;
        a.mode = ND_MODE_ASYNC;
        a.servers = 2;
        nd_trainer *tr = NULL;
        if (nd_trainer_setup(&tr, &a, three, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
            n = nd_trainer_result(tr).model->num_params;
            async_params = malloc(sizeof(float) * n);
            memcpy(async_params, nd_trainer_result(tr).model->param, sizeof(float) * n);
        }
        nd_trainer_free(tr);
        nd_comm_free(three);
    }
    double verdict[1] = {-1.0}; /* -1 failed, else max |difference| */
    if (rank == 0 && async_params) {
        nd_comm *self = NULL;
        nd_comm_self(&self, &err);
        nd_trainer *tr = NULL;
        if (nd_trainer_setup(&tr, &cfg, self, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK &&
            nd_trainer_result(tr).model->num_params == n) {
            verdict[0] = 0.0;
            for (size_t i = 0; i < n; ++i)
                verdict[0] = fmax(verdict[0], fabs((double)nd_trainer_result(tr).model->param[i] - async_params[i]));
        }
        nd_trainer_free(tr);
        nd_comm_free(self);
    }
    free(async_params);
    nd_comm_bcast_f64(world, verdict, 1, 0, &err);
    if (rank == 0) print_message("  async K=2, W=1 vs sync on one rank: max |difference| %g\n", verdict[0]);
    assert_true(verdict[0] == 0.0);
}

/* --deterministic: the same seed, global batch and data give bit-identical
 * parameters on 4, 2 and 1 ranks (Adam, warmup, clipping and weight decay
 * included, uneven blocks: 1001 rows in 4 micro-batches; batch norm per
 * micro-batch and dropout masks per sample, so those too). */
static void test_deterministic_across_rank_counts(void **state) {
    (void)state;
    const int rank = nd_comm_rank(world);
    char path[512];
    fx_path(path, sizeof path, "det.h5");
    nd_error err = {0};
    mpi_synth(world, path, &(nd_synth_config){1001, 200, 0, 12, 4, 0.8f, 13, 0, 0, {0, 0, 0}});
    nd_train_config cfg;
    mpi_base_config(&cfg, path);
    snprintf(cfg.arch, sizeof cfg.arch, "12:drop0.1-16:bn:relu:drop0.2-8:bn:tanh-4");
    cfg.opt = ND_OPT_ADAM;
    cfg.deterministic = true;
    cfg.micro_batches = 4;
    cfg.batch = 10;
    cfg.epochs = 2;
    cfg.lr = 0.003f;
    cfg.warmup_steps = 5;
    cfg.clip_norm = 1.0f;
    cfg.weight_decay = 1e-4f;
    float *p[3] = {NULL, NULL, NULL};
    size_t n = 0;
    const int sizes[3] = {4, 2, 1};
    for (int k = 0; k < 3; ++k) {
        nd_comm *part = NULL;
        nd_comm_split(world, rank < sizes[k] ? 0 : -1, &part, &err);
        if (!part) continue;
        nd_trainer *tr = NULL;
        if (nd_trainer_setup(&tr, &cfg, part, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK && rank == 0) {
            n = nd_trainer_result(tr).model->num_params;
            p[k] = malloc(sizeof(float) * n);
            memcpy(p[k], nd_trainer_result(tr).model->param, sizeof(float) * n);
        }
        nd_trainer_free(tr);
        nd_comm_free(part);
    }
    double verdict[2] = {-1, -1};
    if (rank == 0 && p[0] && p[1] && p[2]) {
        verdict[0] = memcmp(p[0], p[1], sizeof(float) * n) == 0;
        verdict[1] = memcmp(p[0], p[2], sizeof(float) * n) == 0;
    }
    for (int k = 0; k < 3; ++k) free(p[k]);
    nd_comm_bcast_f64(world, verdict, 2, 0, &err);
    if (rank == 0)
        print_message("  deterministic: 4 vs 2 ranks identical %g, 4 vs 1 rank identical %g\n", verdict[0], verdict[1]);
    assert_true(verdict[0] == 1.0);
    assert_true(verdict[1] == 1.0);
}

/* Async checkpoints gather the weights and Adam state from K = 2 servers
 * and resume scatters them back. With one worker and no shuffling the run
 * is deterministic, so resuming at an epoch boundary must end bit-identical
 * to the run that never stopped. */
static void test_async_checkpoint_resume_two_servers(void **state) {
    (void)state;
    const int rank = nd_comm_rank(world);
    char path[512], dir_a[512], dir_b[512], mid[700];
    fx_path(path, sizeof path, "async-ckpt.h5");
    fx_path(dir_a, sizeof dir_a, "async-ckpt-a");
    fx_path(dir_b, sizeof dir_b, "async-ckpt-b");
    nd_error err = {0};
    mpi_synth(world, path, &(nd_synth_config){640, 100, 0, 10, 3, 1.0f, 17, 0, 0, {0, 0, 0}});
    nd_comm *three = NULL;
    nd_comm_split(world, rank < 3 ? 0 : -1, &three, &err);
    double verdict[1] = {-1};
    if (three) {
        nd_train_config cfg;
        mpi_base_config(&cfg, path);
        cfg.mode = ND_MODE_ASYNC;
        snprintf(cfg.hidden, sizeof cfg.hidden, "9,7");
        cfg.opt = ND_OPT_ADAM;
        cfg.servers = 2;
        cfg.shuffle = false;
        cfg.batch = 16; /* 640 rows: 40 updates an epoch */
        cfg.epochs = 3;
        cfg.lr = 0.01f;
        cfg.keep = 20;
        float *p[2] = {NULL, NULL};
        size_t n = 0;
        for (int run = 0; run < 2; ++run) {
            nd_train_config c = cfg;
            snprintf(c.checkpoint_dir, sizeof c.checkpoint_dir, "%s", run ? dir_b : dir_a);
            if (run) {
                nd_checkpoint_name(mid, sizeof mid, dir_a, 40); /* the end of epoch 1 */
                snprintf(c.resume, sizeof c.resume, "%s", mid);
            }
            nd_trainer *tr = NULL;
            if (nd_trainer_setup(&tr, &c, three, &err) == ND_OK && nd_trainer_fit(tr, &err) == ND_OK) {
                n = nd_trainer_result(tr).model->num_params;
                p[run] = malloc(sizeof(float) * n);
                memcpy(p[run], nd_trainer_result(tr).model->param, sizeof(float) * n);
            } else if (err.msg[0]) {
                fprintf(stderr, "rank %d: %s\n", rank, err.msg);
            }
            nd_trainer_free(tr);
        }
        if (rank == 0 && p[0] && p[1]) {
            verdict[0] = 0;
            for (size_t i = 0; i < n; ++i) verdict[0] = fmax(verdict[0], fabs((double)p[0][i] - p[1][i]));
        }
        free(p[0]), free(p[1]);
        nd_comm_free(three);
    }
    nd_comm_bcast_f64(world, verdict, 1, 0, &err);
    if (rank == 0) print_message("  async K=2 resumed at an epoch end vs straight: max |difference| %g\n", verdict[0]);
    assert_true(verdict[0] == 0.0);
}

static void test_too_few_ranks(void **state) {
    (void)state;
    outcome o = run(ND_MODE_ASYNC, 4, 0, "", 0);
    assert_false(o.ok);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_servers_straggler_uneven),
        cmocka_unit_test(test_ssp_bounds),
        cmocka_unit_test(test_ssp_lockstep_staleness_schedule),
        cmocka_unit_test(test_overlap_two_servers),
        cmocka_unit_test(test_two_servers_reassemble_exactly),
        cmocka_unit_test(test_deterministic_across_rank_counts),
        cmocka_unit_test(test_async_checkpoint_resume_two_servers),
        cmocka_unit_test(test_too_few_ranks),
    };
    return mpi_test_main(argc, argv, &world, tests, sizeof tests / sizeof tests[0], 4);
}
