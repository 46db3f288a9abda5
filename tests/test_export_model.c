/* The model a run leaves and the checkpoint layout readers outside nndist
 * rely on (docs/checkpoints.md). Run with `mpiexec -n 2`: the final model
 * file (--save and its defaults, refusing to replace other files), the
 * `latest` link through pruning and --resume auto, the layer attributes and
 * UTF-8 strings of format 3, format 2 still read, and inference that skips
 * the dropout before a residual block (what an exported module does).
 * Collective work comes first in every test and assertions last. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "mpi_fixture.h"
#include "nndist/arena.h"
#include "nndist/checkpoint.h"

static nd_comm *world;

/* Rank 0: an empty directory at path (its files removed). */
static void fresh_dir(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        char p[1200];
        for (struct dirent *e; (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    mkdir(path, 0777);
}

static const char *data_path(char *buf, size_t cap) {
    fx_path(buf, cap, "export-data.h5");
    const nd_synth_config s = {.rows = 512, .test_rows = 128, .features = 8, .classes = 3, .separation = 3, .seed = 4};
    mpi_synth(world, buf, &s);
    return buf;
}

static void small_config(nd_train_config *cfg, const char *data) {
    mpi_base_config(cfg, data);
    snprintf(cfg->arch, sizeof cfg->arch, "8-16:bn:relu:drop0.2-res(16:relu-16):relu-3");
    cfg->batch = 16;
    cfg->epochs = 2;
}

/* Setup, fit and nd_train_save_model; *params (rank 0, malloc'd) the final
 * parameters. Returns the agreed status; err keeps rank 0's message. */
static nd_status train_and_save(const nd_train_config *cfg, float **params, size_t *n, long *steps, nd_error *err) {
    nd_trainer *tr = NULL;
    nd_status st = nd_trainer_setup(&tr, cfg, world, err);
    if (st == ND_OK) st = nd_trainer_fit(tr, err);
    if (st == ND_OK) st = nd_train_save_model(tr, err);
    if (st == ND_OK && params) {
        const nd_model *m = nd_trainer_result(tr).model;
        *n = m->num_params;
        *params = malloc(sizeof(float) * *n);
        memcpy(*params, m->param, sizeof(float) * *n);
        *steps = nd_trainer_result(tr).steps;
    }
    nd_trainer_free(tr);
    return st;
}

/* Loads path (no optimizer) and compares its arrays with params: 1 if equal. */
static int loads_as(const char *path, const float *params, nd_ckpt_info *info) {
    nd_error err = {0};
    if (nd_checkpoint_probe(path, info, &err) != ND_OK) return fprintf(stderr, "%s\n", err.msg), 0;
    nd_model m;
    if (nd_model_create(&m, &info->spec, 4, &err) != ND_OK) return 0;
    float *mean = nd_buffer_alloc((size_t)info->spec.input_dim), *inv = nd_buffer_alloc((size_t)info->spec.input_dim);
    int same = nd_checkpoint_read(path, &m, NULL, mean, inv, NULL, info, &err) == ND_OK;
    if (!same) fprintf(stderr, "%s\n", err.msg);
    for (int t = 0; same && t < m.num_tensors; ++t) {
        const nd_span s = m.tensor[t].span;
        same = !memcmp(m.param + s.offset, params + s.offset, sizeof(float) * s.length);
    }
    nd_model_destroy(&m);
    nd_buffer_free(mean);
    nd_buffer_free(inv);
    return same;
}

static int count_checkpoints(const char *dir) {
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        n += !strncmp(e->d_name, "ckpt-step", 9) && !strstr(e->d_name, "tmp");
    if (d) closedir(d);
    return n;
}

/* --checkpoint-dir: model.h5 there holds the final weights (no optimizer
 * state); `latest` links to the newest checkpoint that pruning kept. */
static void test_model_in_checkpoint_dir(void **state) {
    (void)state;
    char data[512], dir[512], model[600], link[600], target[64] = "", want[64];
    data_path(data, sizeof data);
    fx_path(dir, sizeof dir, "export-ckpt");
    if (nd_comm_rank(world) == 0) fresh_dir(dir);
    nd_train_config cfg;
    small_config(&cfg, data);
    snprintf(cfg.checkpoint_dir, sizeof cfg.checkpoint_dir, "%s", dir);
    cfg.checkpoint_every = 5;
    cfg.keep = 2;
    float *params = NULL;
    size_t n = 0;
    long steps = 0;
    nd_error err = {0};
    const nd_status st = train_and_save(&cfg, &params, &n, &steps, &err);
    if (st != ND_OK) fail_msg("rank %d: %s", nd_comm_rank(world), err.msg);
    if (nd_comm_rank(world) != 0) return;
    snprintf(model, sizeof model, "%s/model.h5", dir);
    snprintf(link, sizeof link, "%s/latest", dir);
    nd_ckpt_info info;
    assert_true(loads_as(model, params, &info));
    assert_string_equal(info.optimizer, "none");
    assert_int_equal(info.format, ND_CKPT_FORMAT);
    assert_true(info.meta.input_scale == 1.0f);
    assert_string_equal(info.meta.loss, "softmax_ce");
    assert_string_equal(info.meta.metric_name, "test_accuracy");
    const ssize_t len = readlink(link, target, sizeof target - 1);
    assert_true(len > 0);
    target[len] = '\0';
    snprintf(want, sizeof want, "ckpt-step%08ld.h5", steps);
    assert_string_equal(target, want); /* relative, the newest */
    assert_int_equal(count_checkpoints(dir), 2);
    assert_true(loads_as(link, params, &info)); /* the link opens as the file */
    free(params);
}

/* Rank 0: a dataset (not a checkpoint) at path; returns its size. */
static long plant_dataset(const char *path) {
    float x[8] = {0};
    int y[1] = {0};
    fx_write_dataset(path, x, y, 1, 8, 3, NULL, NULL, 0);
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static long size_of(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* A run never replaces a file that is not a checkpoint (at setup, and again
 * when the file appeared during the run); the default beside --summary;
 * --save none writes nothing; a missing directory is refused at setup. */
static void test_save_path_checks(void **state) {
    (void)state;
    const int rank = nd_comm_rank(world);
    char data[512], other[512], summary[512], beside[512], none_sum[512], none_model[512];
    data_path(data, sizeof data);
    fx_path(other, sizeof other, "export-other.h5");
    fx_path(summary, sizeof summary, "export-run.json");
    fx_path(beside, sizeof beside, "export-run.model.h5");
    fx_path(none_sum, sizeof none_sum, "export-none.json");
    fx_path(none_model, sizeof none_model, "export-none.model.h5");
    long other_size = 0;
    if (rank == 0) other_size = plant_dataset(other), unlink(beside), unlink(none_model);
    nd_error err = {0};
    nd_comm_barrier(world, &err);

    nd_train_config cfg;
    small_config(&cfg, data);
    cfg.epochs = 1;
    /* --save naming a dataset: refused before training. */
    snprintf(cfg.save, sizeof cfg.save, "%s", other);
    nd_error e1 = {0};
    nd_trainer *tr = NULL;
    const nd_status s1 = nd_trainer_setup(&tr, &cfg, world, &e1);
    nd_trainer_free(tr);
    /* A directory that does not exist. */
    snprintf(cfg.save, sizeof cfg.save, "%s/no-such-dir/m.h5", NNDIST_TEST_TMP);
    nd_error e2 = {0};
    tr = NULL;
    const nd_status s2 = nd_trainer_setup(&tr, &cfg, world, &e2);
    nd_trainer_free(tr);
    /* The default beside --summary; a dataset appears there during the run:
     * refused, then written once it is gone. */
    cfg.save[0] = '\0';
    snprintf(cfg.summary, sizeof cfg.summary, "%s", summary);
    nd_error e3 = {0}, e4 = {0};
    tr = NULL;
    nd_status s3 = nd_trainer_setup(&tr, &cfg, world, &e3), s4 = ND_ERR_STATE;
    if (s3 == ND_OK) s3 = nd_trainer_fit(tr, &e3);
    long planted = 0, after = 0;
    if (s3 == ND_OK) {
        if (rank == 0) planted = plant_dataset(beside);
        s3 = nd_train_save_model(tr, &e3);
        if (rank == 0) after = size_of(beside), unlink(beside);
        s4 = nd_train_save_model(tr, &e4);
    }
    nd_trainer_free(tr);
    /* --save none. */
    snprintf(cfg.summary, sizeof cfg.summary, "%s", none_sum);
    snprintf(cfg.save, sizeof cfg.save, "none");
    nd_error e5 = {0};
    const nd_status s5 = train_and_save(&cfg, NULL, NULL, NULL, &e5);

    assert_int_not_equal(s1, ND_OK);
    assert_int_not_equal(s2, ND_OK);
    assert_int_not_equal(s3, ND_OK);
    assert_int_equal(s4, ND_OK);
    assert_int_equal(s5, ND_OK);
    if (rank != 0) return;
    print_message("  %s\n  %s\n  %s\n", e1.msg, e2.msg, e3.msg);
    assert_non_null(strstr(e1.msg, "exists and is not an nndist checkpoint"));
    assert_int_equal(size_of(other), other_size);
    assert_non_null(strstr(e2.msg, "does not exist"));
    assert_non_null(strstr(e3.msg, "exists and is not an nndist checkpoint"));
    assert_int_equal(after, planted); /* untouched */
    assert_true(nd_checkpoint_is(beside));
    assert_int_equal(access(none_model, F_OK), -1);
}

/* --resume auto reads the names, not the link: a dangling `latest` and a
 * stale temporary link change nothing, and the next checkpoint mends both.
 * A `latest` that is the user's own file is left alone. */
static void test_latest_link_and_resume(void **state) {
    (void)state;
    const int rank = nd_comm_rank(world);
    char data[512], dir[512], link[600], stale[600], target[64] = "";
    data_path(data, sizeof data);
    fx_path(dir, sizeof dir, "export-resume");
    snprintf(link, sizeof link, "%s/latest", dir);
    snprintf(stale, sizeof stale, "%s/latest.tmp.999999", dir);
    if (rank == 0) fresh_dir(dir);
    nd_train_config cfg;
    small_config(&cfg, data);
    cfg.epochs = 1;
    snprintf(cfg.checkpoint_dir, sizeof cfg.checkpoint_dir, "%s", dir);
    nd_error err = {0};
    nd_status st = train_and_save(&cfg, NULL, NULL, NULL, &err);
    if (rank == 0) {
        unlink(link);
        symlink("ckpt-step99999999.h5", link); /* dangling */
        symlink("ckpt-step00000001.h5", stale);
    }
    nd_comm_barrier(world, &err);
    cfg.epochs = 2;
    snprintf(cfg.resume, sizeof cfg.resume, "auto");
    float *params = NULL;
    size_t n = 0;
    long steps = 0;
    if (st == ND_OK) st = train_and_save(&cfg, &params, &n, &steps, &err);
    if (st != ND_OK) fail_msg("rank %d: %s", rank, err.msg);
    if (rank != 0) return;
    const ssize_t len = readlink(link, target, sizeof target - 1);
    assert_true(len > 0);
    target[len] = '\0';
    char want[64];
    snprintf(want, sizeof want, "ckpt-step%08ld.h5", steps);
    assert_string_equal(target, want);
    assert_int_equal(steps, 2 * 512 / 32); /* resumed after epoch 1, not started over */
    assert_int_equal(access(stale, F_OK), -1);
    nd_ckpt_info info;
    assert_true(loads_as(link, params, &info));
    free(params);
    unlink(link);
    FILE *f = fopen(link, "w");
    fputs("mine\n", f);
    fclose(f);
    assert_int_equal(nd_checkpoint_link_latest(dir, &err), ND_OK);
    struct stat sb;
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
}

/* Reads string attribute attr of obj (any kind) into out: 1 if it is a
 * variable-length UTF-8 string. */
static int utf8_attr(hid_t obj, const char *attr, char *out, size_t cap) {
    hid_t a = H5Aopen(obj, attr, H5P_DEFAULT), type = H5Aget_type(a);
    const int vlen = H5Tis_variable_str(type) > 0, utf8 = H5Tget_cset(type) == H5T_CSET_UTF8;
    out[0] = '\0';
    if (vlen) {
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5T_CSET_UTF8);
        char *v = NULL;
        if (H5Aread(a, mem, &v) >= 0 && v) snprintf(out, cap, "%s", v), H5free_memory(v);
        H5Tclose(mem);
    }
    H5Tclose(type);
    H5Aclose(a);
    return vlen && utf8;
}

/* Turns a format-3 file into what format 2 wrote: fixed-length ASCII
 * strings, none of the new attributes. */
static herr_t to_fixed(hid_t loc, const char *name, const H5A_info_t *ai, void *data) {
    (void)ai, (void)data;
    char value[9000];
    if (!utf8_attr(loc, name, value, sizeof value)) return 0;
    H5Adelete(loc, name);
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    H5Tset_size(type, strlen(value) + 1);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, type, value);
    H5Aclose(a), H5Sclose(space), H5Tclose(type);
    return 1; /* the list changed: start over */
}

static void make_format2(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    const char *added[] = {"layers",        "input_shape",   "input_dtype", "input_scale",
                           "input_dropout", "normalization", "loss"};
    for (size_t i = 0; i < sizeof added / sizeof added[0]; ++i) H5Adelete(f, added[i]);
    while (H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, to_fixed, NULL) > 0) continue;
    H5Adelete(f, "format_version");
    fx_attr_int(f, "format_version", 2);
    H5Fclose(f);
}

/* Format 3's layout as docs/checkpoints.md has it, and format 2 still read.
 * Rank 0 only (files, no collectives). */
static void test_layout_and_format2(void **state) {
    (void)state;
    if (nd_comm_rank(world) != 0) return;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* H5Tget_cset of a number fails, quietly */
    nd_model_spec spec;
    char why[128], path[512], text[512];
    assert_int_equal(nd_arch_parse("2x4x4-c3k3p1:bn:relu-mp2-6:maxout2-3", (nd_activation){ND_ACT_RELU, 0.0f}, &spec,
                                   why, sizeof why),
                     0);
    nd_model m;
    nd_error err = {0};
    assert_int_equal(nd_model_create(&m, &spec, 2, &err), ND_OK);
    nd_model_init_params(&m, 3, ND_INIT_HE);
    float mean[32], inv[32];
    for (int i = 0; i < 32; ++i) mean[i] = 0.1f * (float)i, inv[i] = 2.0f;
    nd_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.world_size = 1, meta.global_batch = 1;
    meta.input_scale = 1.0f / 255, meta.input_uint8 = 1;
    snprintf(meta.loss, sizeof meta.loss, "softmax_ce");
    fx_path(path, sizeof path, "export-layout.h5");
    assert_int_equal(nd_checkpoint_write(path, &m, NULL, mean, inv, NULL, &meta, &err), ND_OK);

    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(utf8_attr(f, "arch", text, sizeof text));
    assert_string_equal(text, "2x4x4-c3k3p1:bn:relu-mp2-6:maxout2-3");
    assert_true(utf8_attr(f, "input_dtype", text, sizeof text));
    assert_string_equal(text, "uint8");
    const char *groups[][2] = {{"/model/conv0", "conv"},
                               {"/model/maxpool1", "maxpool"},
                               {"/model/dense2", "dense"},
                               {"/model/dense3", "dense"},
                               {"/model/bn0", "batch_norm"}};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; ++i) {
        hid_t g = H5Gopen2(f, groups[i][0], H5P_DEFAULT);
        assert_true(g >= 0);
        assert_true(utf8_attr(g, "type", text, sizeof text));
        assert_string_equal(text, groups[i][1]);
        if (i == 2) {
            assert_true(utf8_attr(g, "activation", text, sizeof text));
            assert_string_equal(text, "maxout");
        }
        H5Gclose(g);
    }
    H5Fclose(f);
    nd_ckpt_info info;
    assert_true(loads_as(path, m.param, &info));
    assert_true(fabsf(info.meta.input_scale - 1.0f / 255) < 1e-9f);
    assert_int_equal(info.meta.input_uint8, 1);

    make_format2(path);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_false(utf8_attr(f, "arch", text, sizeof text)); /* now fixed-length */
    H5Fclose(f);
    assert_true(loads_as(path, m.param, &info));
    assert_int_equal(info.format, 2);
    nd_model_destroy(&m);
}

/* Inference ignores the dropout before a residual block: its skip path
 * once read the dropout buffer, stale from the latest training pass. */
static void test_inference_skip_after_dropout(void **state) {
    (void)state;
    const char *archs[] = {"4:drop0.5-res(4:relu-4):relu-2", "4-6:relu:drop0.5-res(6:relu-6):relu-2"};
    for (int i = 0; i < 2; ++i) {
        nd_model_spec spec;
        char why[128];
        assert_int_equal(nd_arch_parse(archs[i], (nd_activation){ND_ACT_RELU, 0.0f}, &spec, why, sizeof why), 0);
        nd_model a, b;
        nd_error err = {0};
        assert_int_equal(nd_model_create(&a, &spec, 3, &err), ND_OK);
        assert_int_equal(nd_model_create(&b, &spec, 3, &err), ND_OK);
        nd_model_init_params(&a, 7, ND_INIT_HE);
        memcpy(b.param, a.param, sizeof(float) * a.num_params);
        const float x[12] = {1, -2, 3, 0.5f, 2, 2, -1, 1, 0.3f, -0.7f, 1.5f, 2.5f};
        const nd_train_pass pass = {.seed = 5, .step = 1};
        nd_model_zero_grad(&a);
        nd_model_forward(&a, x, 3, &pass); /* fills the dropout buffers */
        const float *ya = nd_model_forward(&a, x, 3, NULL), *yb = nd_model_forward(&b, x, 3, NULL);
        for (int j = 0; j < 6; ++j) assert_true(ya[j] == yb[j]);
        nd_model_destroy(&a);
        nd_model_destroy(&b);
    }
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_in_checkpoint_dir),      cmocka_unit_test(test_save_path_checks),
        cmocka_unit_test(test_latest_link_and_resume),       cmocka_unit_test(test_layout_and_format2),
        cmocka_unit_test(test_inference_skip_after_dropout),
    };
    return mpi_test_main(argc, argv, &world, tests, sizeof tests / sizeof tests[0], 2);
}
