/* Checkpoint files: exact round trip, and every damaged or mismatched file
 * refused with a clear line; a writer killed at random moments never leaves
 * a file that fails to load. */
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include "nndist/checkpoint.h"
#include "nndist/rng.h"

/* 1 if arena index j belongs to an array (not alignment padding). */
static int in_some_span(const nd_model *m, size_t j) {
    for (int t = 0; t < m->num_tensors; ++t)
        if (j >= m->tensor[t].span.offset && j < m->tensor[t].span.offset + m->tensor[t].span.length) return 1;
    return 0;
}

typedef struct {
    nd_model model;
    nd_optimizer opt;
    float mean[6], inv_std[6];
} state;

/* A model of arch with Adam state, filled with seeded noise. */
static void make_arch_state(state *s, const char *arch, uint64_t seed) {
    nd_model_spec spec;
    char why[128];
    assert_int_equal(nd_arch_parse(arch, (nd_activation){ND_ACT_RELU, 0.0f}, &spec, why, sizeof why), 0);
    nd_error err = {0};
    assert_int_equal(nd_model_create(&s->model, &spec, 2, &err), ND_OK);
    nd_opt_config oc = {.kind = ND_OPT_ADAM, .momentum = 0.9f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    assert_int_equal(nd_optimizer_create(&s->opt, &oc, s->model.num_params, &err), ND_OK);
    nd_rng rng;
    nd_rng_seed(&rng, seed, 1, 2);
    for (size_t j = 0; j < s->model.num_params; ++j) { /* batch norm and padding too */
        s->model.param[j] = (float)nd_rng_normal(&rng);
        s->opt.m[j] = (float)nd_rng_normal(&rng);
        s->opt.v[j] = (float)nd_rng_uniform(&rng);
    }
    for (size_t j = 0; j < s->model.num_params; ++j) /* what the file keeps: padding is not in it */
        if (!in_some_span(&s->model, j)) s->model.param[j] = s->opt.m[j] = s->opt.v[j] = 0.0f;
    s->opt.step = 1234;
    for (int i = 0; i < 6; ++i) s->mean[i] = (float)i / 3, s->inv_std[i] = 1.0f + (float)i;
}

/* A 6-(5,4)-3 model, batch norm in its first layer. */
static void make_state(state *s, int hidden0, uint64_t seed) {
    char arch[64];
    snprintf(arch, sizeof arch, "6-%d:bn:tanh:drop0.2-4:tanh-3", hidden0);
    make_arch_state(s, arch, seed);
}

static void free_state(state *s) {
    nd_model_destroy(&s->model);
    nd_optimizer_destroy(&s->opt);
}

static nd_ckpt_meta sample_meta(void) {
    nd_ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.step = 4321;
    m.epoch = 3;
    m.epoch_step = 17;
    m.epoch_loss_sum = 12.5;
    m.epoch_correct = 99;
    m.world_size = 2;
    m.global_batch = 128;
    m.plateau_scale = 0.01;
    m.plateau_best = 0.875;
    m.plateau_bad = 2;
    snprintf(m.config, sizeof m.config, "lr = 0.01\nbatch = 64\n");
    return m;
}

static const char *tmp(char *buf, size_t cap, const char *name) { return fx_path(buf, cap, name); }

static void write_sample(const char *path, int hidden0) {
    state s;
    make_state(&s, hidden0, 7);
    nd_ckpt_meta meta = sample_meta();
    nd_error err = {0};
    assert_int_equal(nd_checkpoint_write(path, &s.model, &s.opt, s.mean, s.inv_std, NULL, &meta, &err), ND_OK);
    free_state(&s);
}

static void test_round_trip_exact(void **st) {
    (void)st;
    char path[512];
    tmp(path, sizeof path, "rt.h5");
    state a, b;
    make_state(&a, 5, 7);
    make_state(&b, 5, 99); /* different contents, same shapes */
    nd_ckpt_meta meta = sample_meta();
    nd_error err = {0};
    float ema_a[256], ema_b[256];
    assert_true(a.model.num_params <= 256);
    for (size_t i = 0; i < a.model.num_params; ++i)
        ema_a[i] = 0.5f * a.model.param[i], ema_b[i] = 0; /* padding stays 0 */
    assert_int_equal(nd_checkpoint_write(path, &a.model, &a.opt, a.mean, a.inv_std, ema_a, &meta, &err), ND_OK);
    nd_ckpt_info info;
    if (nd_checkpoint_read(path, &b.model, &b.opt, b.mean, b.inv_std, ema_b, &info, &err) != ND_OK)
        fail_msg("%s", err.msg);
    assert_true(info.has_ema);
    assert_memory_equal(ema_a, ema_b, sizeof(float) * a.model.num_params);
    assert_memory_equal(a.model.param, b.model.param, sizeof(float) * a.model.num_params);
    assert_memory_equal(a.opt.m, b.opt.m, sizeof(float) * a.model.num_params);
    assert_memory_equal(a.opt.v, b.opt.v, sizeof(float) * a.model.num_params);
    assert_memory_equal(a.mean, b.mean, sizeof a.mean);
    assert_memory_equal(a.inv_std, b.inv_std, sizeof a.inv_std);
    assert_int_equal(b.opt.step, 1234);
    assert_int_equal(info.meta.step, 4321);
    assert_int_equal(info.meta.epoch, 3);
    assert_int_equal(info.meta.epoch_step, 17);
    assert_true(info.meta.epoch_loss_sum == 12.5);
    assert_int_equal(info.meta.global_batch, 128);
    assert_true(info.meta.plateau_scale == 0.01 && info.meta.plateau_best == 0.875);
    assert_int_equal(info.meta.plateau_bad, 2);
    assert_string_equal(info.meta.config, meta.config);
    assert_string_equal(info.optimizer, "adam");
    assert_int_equal(info.spec.hidden[0].width, 5);
    assert_int_equal(info.spec.hidden[0].act.kind, ND_ACT_TANH);
    assert_int_equal(info.spec.hidden[0].batch_norm, 1);
    assert_true(info.spec.hidden[0].drop == 0.2f);
    /* Batch norm's running variance is stored by name too. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fb = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t db = H5Dopen2(fb, "/model/bn0/running_var", H5P_DEFAULT);
    float rv[5];
    assert_true(H5Dread(db, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, rv) >= 0);
    assert_memory_equal(rv, a.model.param + a.model.layer[0].bn.run_var.offset, sizeof rv);
    H5Dclose(db), H5Fclose(fb);
    /* The weights are readable by name: /model/dense1/W is (4 x 5). */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/model/dense1/W", H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    float w[20];
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w);
    assert_int_equal(dims[0], 4);
    assert_int_equal(dims[1], 5);
    assert_memory_equal(w, a.model.param + a.model.layer[1].w.offset, sizeof w);
    H5Sclose(sp), H5Dclose(d), H5Fclose(f);
    free_state(&a);
    free_state(&b);
}

/* Reads path into a fresh 6-(5,4)-3 Adam state; returns the status and message. */
static nd_status try_read(const char *path, int hidden0, nd_opt_kind kind, char *msg, size_t cap) {
    state s;
    make_state(&s, hidden0, 3);
    if (kind != ND_OPT_ADAM) {
        nd_optimizer_destroy(&s.opt);
        nd_opt_config oc = {.kind = kind, .momentum = 0.9f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
        nd_error e2 = {0};
        nd_optimizer_create(&s.opt, &oc, s.model.num_params, &e2);
    }
    nd_ckpt_info info;
    nd_error err = {0};
    nd_status st = nd_checkpoint_read(path, &s.model, &s.opt, s.mean, s.inv_std, NULL, &info, &err);
    snprintf(msg, cap, "%s", err.msg);
    free_state(&s);
    return st;
}

static void expect_refused(const char *path, int hidden0, nd_opt_kind kind, const char *needle) {
    char msg[512];
    nd_status st = try_read(path, hidden0, kind, msg, sizeof msg);
    if (st == ND_OK || !strstr(msg, needle))
        fail_msg("reading %s: want an error with '%s', got '%s'", path, needle, msg);
}

/* A convolutional net's arrays under their names, in PyTorch's shapes
 * (nn.Conv2d's (out, in, kh, kw)), back bit for bit. */
static void test_conv_round_trip(void **st) {
    (void)st;
    char path[512];
    tmp(path, sizeof path, "conv.h5");
    const char *arch = "1x2x3-c4k3p1:bn:relu-res(c6k3s2p1:bn:relu-c6k3p1:bn):relu-gap-3";
    state a, b;
    make_arch_state(&a, arch, 5);
    make_arch_state(&b, arch, 6);
    nd_ckpt_meta meta = sample_meta();
    nd_error err = {0};
    assert_int_equal(nd_checkpoint_write(path, &a.model, &a.opt, a.mean, a.inv_std, NULL, &meta, &err), ND_OK);
    nd_ckpt_info info;
    if (nd_checkpoint_read(path, &b.model, &b.opt, b.mean, b.inv_std, NULL, &info, &err) != ND_OK)
        fail_msg("%s", err.msg);
    assert_memory_equal(a.model.param, b.model.param, sizeof(float) * a.model.num_params);
    assert_memory_equal(a.opt.v, b.opt.v, sizeof(float) * a.model.num_params);
    assert_true(info.spec.image.c == 1 && info.spec.image.h == 2 && info.spec.image.w == 3);
    static const struct {
        const char *name;
        int ndims;
        hsize_t dims[4];
    } arrays[] = {{"/model/conv0/W", 4, {4, 1, 3, 3}}, {"/model/conv0/b", 1, {4}},
                  {"/model/bn0/running_var", 1, {4}},  {"/model/conv1/W", 4, {6, 4, 3, 3}},
                  {"/model/proj2/W", 4, {6, 4, 1, 1}}, {"/model/projbn2/gamma", 1, {6}},
                  {"/model/dense4/W", 2, {3, 6}},      {"/optimizer/m/conv2/W", 4, {6, 6, 3, 3}}};
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; ++i) {
        hid_t d = H5Dopen2(f, arrays[i].name, H5P_DEFAULT);
        if (d < 0) fail_msg("%s is missing", arrays[i].name);
        hid_t space = H5Dget_space(d);
        hsize_t dims[4] = {0};
        assert_int_equal(H5Sget_simple_extent_ndims(space), arrays[i].ndims);
        H5Sget_simple_extent_dims(space, dims, NULL);
        assert_memory_equal(dims, arrays[i].dims, sizeof(hsize_t) * (size_t)arrays[i].ndims);
        H5Sclose(space);
        H5Dclose(d);
    }
    H5Fclose(f);
    /* Another architecture is refused by name. */
    state c;
    make_arch_state(&c, "1x2x3-c4k3p1:bn:relu-res(c6k3s2p1:bn:relu-c6k3p1:bn):relu-gap-ap1-3", 6);
    assert_int_equal(nd_checkpoint_read(path, &c.model, &c.opt, c.mean, c.inv_std, NULL, &info, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "architecture"));
    free_state(&a), free_state(&b), free_state(&c);
}

/* Replaces s's optimizer by rmsprop with momentum mu (0: none), its state noise. */
static void use_rmsprop(state *s, float mu) {
    nd_optimizer_destroy(&s->opt);
    nd_opt_config oc = {.kind = ND_OPT_RMSPROP, .eps = 1e-8f, .rho = 0.9f, .rmsprop_momentum = mu};
    nd_error err = {0};
    assert_int_equal(nd_optimizer_create(&s->opt, &oc, s->model.num_params, &err), ND_OK);
    for (size_t j = 0; j < s->model.num_params; ++j)
        if (in_some_span(&s->model, j)) {
            s->opt.m[j] = (float)j / 7.0f;
            if (s->opt.v) s->opt.v[j] = -(float)j / 3.0f;
        }
}

/* rmsprop's momentum buffer is stored and read back; a file without it
 * does not resume a run with it (nor the reverse), by name. */
static void test_rmsprop_momentum_state(void **st) {
    (void)st;
    char plain[512], with[512];
    tmp(plain, sizeof plain, "rmsprop.h5");
    tmp(with, sizeof with, "rmsprop-momentum.h5");
    state a, b, c;
    make_state(&a, 5, 1), make_state(&b, 5, 2), make_state(&c, 5, 3);
    use_rmsprop(&a, 0.0f), use_rmsprop(&b, 0.9f), use_rmsprop(&c, 0.5f);
    nd_ckpt_meta meta = sample_meta();
    nd_error err = {0};
    assert_int_equal(nd_checkpoint_write(plain, &a.model, &a.opt, a.mean, a.inv_std, NULL, &meta, &err), ND_OK);
    assert_int_equal(nd_checkpoint_write(with, &b.model, &b.opt, b.mean, b.inv_std, NULL, &meta, &err), ND_OK);
    nd_ckpt_info info;
    assert_int_equal(nd_checkpoint_read(plain, &c.model, &c.opt, c.mean, c.inv_std, NULL, &info, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "without /optimizer/v, this run's --opt rmsprop needs it (--rmsprop-momentum"));
    assert_int_equal(nd_checkpoint_read(with, &a.model, &a.opt, a.mean, a.inv_std, NULL, &info, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "with /optimizer/v"));
    if (nd_checkpoint_read(with, &c.model, &c.opt, c.mean, c.inv_std, NULL, &info, &err) != ND_OK)
        fail_msg("%s", err.msg);
    assert_memory_equal(b.opt.v, c.opt.v, sizeof(float) * b.model.num_params);
    assert_memory_equal(b.opt.m, c.opt.m, sizeof(float) * b.model.num_params);
    free_state(&a), free_state(&b), free_state(&c);
}

static void test_damaged_and_mismatched(void **st) {
    (void)st;
    char good[512], path[512];
    tmp(good, sizeof good, "good-ckpt.h5");
    write_sample(good, 5);

    /* Wrong architecture / optimizer. */
    expect_refused(good, 7, ND_OPT_ADAM,
                   "architecture 6-5:bn:tanh:drop0.2-4:tanh-3, this run has 6-7:bn:tanh:drop0.2-4:tanh-3");
    expect_refused(good, 5, ND_OPT_MOMENTUM, "optimizer adam, this run has --opt momentum");

    /* One flipped bit in the weights: the checksum catches it. */
    tmp(path, sizeof path, "flipped.h5");
    write_sample(path, 5);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/model/dense0/W", H5P_DEFAULT);
    haddr_t where = H5Dget_offset(d);
    H5Dclose(d), H5Fclose(f);
    assert_true(where != HADDR_UNDEF);
    int fd = open(path, O_RDWR);
    unsigned char byte;
    assert_int_equal(pread(fd, &byte, 1, (off_t)where + 9), 1);
    byte ^= 0x10;
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)where + 9), 1);
    close(fd);
    expect_refused(path, 5, ND_OPT_ADAM, "model checksum mismatch");

    /* Truncated to half its size. */
    tmp(path, sizeof path, "truncated.h5");
    write_sample(path, 5);
    struct stat sb;
    stat(path, &sb);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    expect_refused(path, 5, ND_OPT_ADAM, "truncated.h5");

    /* A format this version does not know. */
    tmp(path, sizeof path, "future.h5");
    write_sample(path, 5);
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "format_version");
    fx_attr_int(f, "format_version", 99);
    H5Fclose(f);
    expect_refused(path, 5, ND_OPT_ADAM, "format version 99, this nndist reads version 2");

    /* A dataset file is not a checkpoint. */
    tmp(path, sizeof path, "a-dataset.h5");
    float x[6] = {0};
    int y[1] = {0};
    fx_write_dataset(path, x, y, 1, 6, 3, NULL, NULL, 0);
    expect_refused(path, 5, ND_OPT_ADAM, "not an nndist checkpoint");
}

/* A writer killed at random moments: the target always loads, and
 * nd_checkpoint_latest skips leftovers to the newest valid file. */
static void test_kill_during_write(void **st) {
    (void)st;
    char dir[512], target[600];
    tmp(dir, sizeof dir, "killdir");
    mkdir(dir, 0777);
    nd_checkpoint_name(target, sizeof target, dir, 1);
    write_sample(target, 5); /* a good previous checkpoint */
    struct timespec seed_ts;
    clock_gettime(CLOCK_MONOTONIC, &seed_ts);
    srand((unsigned)seed_ts.tv_nsec);
    int survived = 0;
    for (int round = 0; round < 25; ++round) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) write_sample(target, 5); /* rewrite the same path until killed */
        }
        struct timespec ts = {0, (long)(1 + rand() % 20) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        char msg[512];
        nd_status s = try_read(target, 5, ND_OPT_ADAM, msg, sizeof msg);
        if (s != ND_OK) fail_msg("round %d: the checkpoint no longer loads: %s", round, msg);
        ++survived;
    }
    assert_int_equal(survived, 25);
    /* A newer file that is garbage (and stray temporaries) are passed over. */
    char junk[600], found_path[700];
    nd_checkpoint_name(junk, sizeof junk, dir, 2);
    FILE *f = fopen(junk, "w");
    fputs("garbage", f);
    fclose(f);
    int found = 0;
    nd_error err = {0};
    assert_int_equal(nd_checkpoint_latest(dir, found_path, sizeof found_path, &found, &err), ND_OK);
    assert_true(found);
    assert_string_equal(found_path, target);
}

static void test_prune_keeps_newest(void **st) {
    (void)st;
    char dir[512], p[600];
    tmp(dir, sizeof dir, "prunedir");
    mkdir(dir, 0777);
    for (long s = 10; s <= 50; s += 10) {
        nd_checkpoint_name(p, sizeof p, dir, s);
        write_sample(p, 5);
    }
    char stale[700];
    snprintf(stale, sizeof stale, "%s/ckpt-step00000060.h5.tmp.999999", dir);
    FILE *f = fopen(stale, "w");
    fclose(f);
    nd_error err = {0};
    assert_int_equal(nd_checkpoint_prune(dir, 2, &err), ND_OK);
    assert_int_equal(access(stale, F_OK), -1);
    for (long s = 10; s <= 50; s += 10) {
        nd_checkpoint_name(p, sizeof p, dir, s);
        assert_int_equal(access(p, F_OK) == 0, s >= 40);
    }
}

int main(void) {
    mkdir(NNDIST_TEST_TMP, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_exact),       cmocka_unit_test(test_conv_round_trip),
        cmocka_unit_test(test_rmsprop_momentum_state), cmocka_unit_test(test_damaged_and_mismatched),
        cmocka_unit_test(test_kill_during_write),      cmocka_unit_test(test_prune_keeps_newest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
