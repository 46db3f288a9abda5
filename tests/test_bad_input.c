/* The nndist program under `mpiexec -n 2` with bad input: each case must end
 * the job with a non-zero exit within the timeout, print exactly one
 * "nndist: error:" line that names the problem, and leave no rank hanging.
 * Files whose fault lies in rank 1's rows check that the rank that finds a
 * problem makes the whole job stop. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "fixture.h"
#include "program.h"

#define TIMEOUT_S 60

static int run2(const char *args, char *out, size_t cap) { return run_nndist(2, args, out, cap, TIMEOUT_S); }

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) ++n;
    return n;
}

static void expect_failure(const char *args, const char *needle) {
    static char out[1 << 16];
    int rc = run2(args, out, sizeof out);
    if (rc == 0 || rc == 124 || rc == 137)
        fail_msg("nndist %s: exit %d (want a prompt non-zero exit)\n%s", args, rc, out);
    if (count(out, "nndist: error:") != 1 || !strstr(out, needle))
        fail_msg("nndist %s: want one error line containing '%s', got:\n%s", args, needle, out);
}

/* A small good file, then variants with one fault each. */
enum { ROWS = 40, COLS = 4, CLASSES = 3 };

static void write_case(const char *name, int fault) {
    char path[512];
    fx_path(path, sizeof path, name);
    float x[ROWS * COLS];
    int y[ROWS];
    fx_blobs(x, y, ROWS, COLS, CLASSES, 2.0f, 1);
    if (fault == 1) y[35] = 7;          /* label out of range, in rank 1's half */
    if (fault == 2) x[37 * COLS] = NAN; /* NaN in rank 1's half */
    if (fault == 3) x[5] = INFINITY;    /* Inf in rank 0's half */
    fx_write_dataset(path, x, y, ROWS, COLS, CLASSES, x, y, fault == 4 ? 0 : 10);
}

static int setup(void **state) {
    (void)state;
    write_case("good.h5", 0);
    write_case("label.h5", 1);
    write_case("nan.h5", 2);
    write_case("inf.h5", 3);
    char path[512];
    hid_t f;
    float x[ROWS * COLS] = {0};
    int y[ROWS] = {0};
    hsize_t xd[2] = {ROWS, COLS}, yd[1] = {ROWS}, yd_short[1] = {ROWS - 3};
    f = fx_create(fx_path(path, sizeof path, "nox.h5"));
    fx_attr_int(f, "num_classes", CLASSES);
    fx_write_i32(f, "/train/y", 1, yd, y);
    fx_close(f);
    f = fx_create(fx_path(path, sizeof path, "noy.h5"));
    fx_attr_int(f, "num_classes", CLASSES);
    fx_write_f32(f, "/train/x", 2, xd, x);
    fx_close(f);
    f = fx_create(fx_path(path, sizeof path, "rows.h5"));
    fx_attr_int(f, "num_classes", CLASSES);
    fx_write_f32(f, "/train/x", 2, xd, x);
    fx_write_i32(f, "/train/y", 1, yd_short, y);
    fx_close(f);
    /* Test split with a different feature count than the model is built for. */
    hsize_t txd[2] = {5, COLS + 2}, tyd[1] = {5};
    f = fx_create(fx_path(path, sizeof path, "cols.h5"));
    fx_attr_int(f, "num_classes", CLASSES);
    fx_write_f32(f, "/train/x", 2, xd, x);
    fx_write_i32(f, "/train/y", 1, yd, y);
    fx_write_f32(f, "/test/x", 2, txd, x);
    fx_write_i32(f, "/test/y", 1, tyd, y);
    fx_close(f);
    /* One training row for two ranks. */
    hsize_t one_x[2] = {1, COLS}, one_y[1] = {1};
    f = fx_create(fx_path(path, sizeof path, "onerow.h5"));
    fx_attr_int(f, "num_classes", CLASSES);
    fx_write_f32(f, "/train/x", 2, one_x, x);
    fx_write_i32(f, "/train/y", 1, one_y, y);
    fx_close(f);
    return 0;
}

#define T NNDIST_TEST_TMP "/"
#define COMMON " --hidden 8 --epochs 1 --batch 4 --progress none"

static void test_missing_things(void **state) {
    (void)state;
    expect_failure("train --data " T "nope.h5" COMMON, "nope.h5: No such file or directory");
    expect_failure("train --data " T "nox.h5" COMMON, "/train/x is missing");
    expect_failure("train --data " T "noy.h5" COMMON, "/train/y is missing");
    expect_failure("train" COMMON, "--data: no dataset given");
}

/* A run that fails its checks leaves earlier outputs as they were. */
static void test_failed_run_keeps_outputs(void **state) {
    (void)state;
    const char *files[2] = {T "kept.jsonl", T "kept.json"};
    for (int i = 0; i < 2; ++i) {
        FILE *f = fopen(files[i], "w");
        fputs("earlier run\n", f);
        fclose(f);
    }
    expect_failure("train --data " T "nan.h5 --metrics " T "kept.jsonl --summary " T "kept.json" COMMON, "is NaN");
    for (int i = 0; i < 2; ++i) {
        char buf[64] = {0};
        FILE *f = fopen(files[i], "r");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        assert_int_equal(n, 12);
        assert_string_equal(buf, "earlier run\n");
    }
}

static void test_bad_contents(void **state) {
    (void)state;
    expect_failure("train --data " T "rows.h5" COMMON, "/train/x has 40 rows but /train/y has 37");
    expect_failure("train --data " T "cols.h5" COMMON, "/test/x has 6 features but /train/x has 4");
    expect_failure("train --data " T "label.h5" COMMON, "/train/y[35] = 7 is outside [0, 3)");
    expect_failure("train --data " T "nan.h5" COMMON, "/train/x[37][0] is NaN");
    expect_failure("train --data " T "inf.h5" COMMON, "/train/x[1][1] is infinite");
    expect_failure("train --data " T "onerow.h5" COMMON, "/train has 1 rows, fewer than the 2 ranks");
    expect_failure("train --data " T "good.h5 --hidden 8 --epochs 1 --batch 64 --progress none",
                   "--batch 64: the smallest shard has only 20 rows");
}

static void test_bad_options(void **state) {
    (void)state;
    expect_failure("train --data " T "good.h5 --optimiser sgd", "unknown option '--optimiser'");
    expect_failure("train --data " T "good.h5 --opt adagrad2", "--opt: 'adagrad2' is not one of");
    expect_failure("train --data " T "good.h5 --batch 0", "--batch: 0 must be >= 1");
    expect_failure("train --data " T "good.h5 --batch -5", "--batch: -5 must be >= 1");
    expect_failure("train --data " T "good.h5 --epochs 0", "--epochs: 0 must be >= 1");
    expect_failure("train --data " T "good.h5 --lr 0", "--lr: 0 must be > 0");
    expect_failure("train --data " T "good.h5 --lr -1", "--lr: -1 must be > 0");
    expect_failure("train --data " T "good.h5 --metrics /nonexistent-dir/m.jsonl" COMMON,
                   "--metrics /nonexistent-dir/m.jsonl");
    expect_failure("train --data " T "good.h5 --summary /nonexistent-dir/s.json" COMMON,
                   "/nonexistent-dir/s.json: cannot create");
    expect_failure("train --data " T "good.h5 --mode async --servers 2" COMMON,
                   "--mode async with --servers 2 needs at least 3 ranks, this job has 2");
    expect_failure("train --data " T "good.h5 --mode ssp --max-staleness -1" COMMON, "--max-staleness");
    expect_failure("train --data " T "good.h5 --straggle 1:0.5" COMMON, "--straggle: '1:0.5'");
    expect_failure("frobnicate", "unknown command 'frobnicate'");
    expect_failure("train --data " T "good.h5 --warmup-steps 5 --warmup-start 1" COMMON,
                   "--warmup-start: 1 must be in [0, 1)");
    expect_failure("train --data " T "good.h5 --warmup-steps 5 --warmup-start 0.1 --warmup-goyal" COMMON,
                   "--warmup-goyal: starts at --lr, not with --warmup-start 0.1");
    /* The recipe's options. */
    expect_failure("train --data " T "good.h5 --arch 4-8:bn:swish-3" COMMON,
                   "--arch '4-8:bn:swish-3': 'swish' is not bn");
    expect_failure("train --data " T "good.h5 --arch 5-8:relu-3" COMMON,
                   "--arch '5-8:relu-3': takes 5 inputs and gives 3 outputs, the data has 4 and 3");
    expect_failure("train --data " T "good.h5 --dropout 1" COMMON, "--dropout: 1 must be in [0, 1)");
    expect_failure("train --data " T "good.h5 --loss huber" COMMON, "--loss: 'huber' is not one of");
    expect_failure("train --data " T "good.h5 --loss l2" COMMON, "--loss l2 needs float targets (N x K), but");
    expect_failure("train --data " T "good.h5 --sync-bn --mode async" COMMON,
                   "--sync-bn: not with --mode async/ssp (the parameter servers cannot add batch-norm sums");
    expect_failure("gradcheck --data " T "good.h5 --arch 4-8:maxout1-3", "maxout takes 2 to 64 pieces");
    expect_failure("train --data " T "good.h5 --bucket-kb -1" COMMON, "--bucket-kb: -1 must be in [0, 1048576]");
    expect_failure("train --data " T "good.h5 --bucket-kb 64 --mode async" COMMON,
                   "--mode async/ssp: not with --bucket-kb (the parameter servers and the bucketed allreduce");
    expect_failure("train --data " T "good.h5 --shard-optimizer --deterministic" COMMON,
                   "--deterministic: not with --shard-optimizer (the fixed-point sum and the sharded optimizer");
    expect_failure("train --data " T "good.h5 --deterministic --compress topk" COMMON,
                   "--compress topk: not with --deterministic (lossy");
    expect_failure("train --data " T "good.h5 --stream-mb -1" COMMON, "--stream-mb: -1 must be in [0, 1e9)");
    expect_failure("train --data " T "good.h5 --stream-mb 8 --mode async" COMMON,
                   "--stream-mb: not with --mode async/ssp (the parameter servers cannot take a streamed feed)");
    expect_failure("train --data " T "good.h5 --stream-mb 0.00001" COMMON,
                   "--stream-mb 1e-05: two windows of one batch (4 rows of 20 bytes) do not fit");
    expect_failure("train --data " T "nan.h5 --stream-mb 0.001" COMMON, "/train/x[37][0] is NaN");
    expect_failure("train --data " T "good.h5 --on-nan maybe" COMMON, "--on-nan: 'maybe' is not one of stop, skip");
    expect_failure("train --data " T "good.h5 --on-nan skip --mode async" COMMON,
                   "--on-nan skip: not with --mode async/ssp (the parameter servers cannot drop a step");
    expect_failure("train --data " T "good.h5 --fault-nan-step 3" COMMON,
                   "step 3: the loss is NaN: stopped before applying it");
    expect_failure("train --data " T "good.h5 --fault-nan-step 2 --mode async" COMMON,
                   "rank 1: this worker's update 2: the loss is NaN: stopped before sending it");
    /* Found by fuzz_dataset: a chunk layout that makes libhdf5 divide by
     * zero inside H5Dopen; the program still ends with one line. */
    expect_failure("train --data " NNDIST_SOURCE_DIR "/tests/fuzz/regress/hdf5-chunk-layout-fpe.h5" COMMON,
                   "arithmetic fault (SIGFPE); a file open for reading: ");
    expect_failure("bench --batch 0", "bench: --batch, --threads, --iters, --seconds and --bucket-kb must be positive");
    expect_failure("bench --hidden 64,x", "--hidden: '64,x' is not a list of positive widths");
}

/* The good file trains, and an existing summary is replaced whole. */
static void test_good_run_and_summary(void **state) {
    (void)state;
    static char out[1 << 16];
    const char *summary = T "summary.json";
    FILE *f = fopen(summary, "w");
    fputs("old", f);
    fclose(f);
    int rc = run2("train --data " T "good.h5 --summary " T "summary.json" COMMON, out, sizeof out);
    if (rc != 0) fail_msg("good run failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "final test accuracy"));
    char buf[4096] = {0};
    f = fopen(summary, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    assert_true(n > 10);
    const char *keys[] = {"\"mode\": \"sync\"", "\"np\": 2",         "\"batch_per_rank\": 4", "\"epochs\": 1",
                          "\"train_seconds\"",  "\"samples_per_s\"", "\"test_accuracy\"",     "\"test_loss\""};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; ++i)
        if (!strstr(buf, keys[i])) fail_msg("summary lacks %s: %s", keys[i], buf);
    /* A Goyal warmup with nothing to ramp (global batch 8 = --ref-batch) runs, warning once. */
    rc = run2("train --data " T "good.h5 --save none --warmup-steps 3 --warmup-goyal --ref-batch 8" COMMON, out,
              sizeof out);
    if (rc != 0 || count(out, "nndist train: warning: --warmup-goyal ramps from --lr to the peak, here --lr too") != 1)
        fail_msg("want one warning line and a good run (%d):\n%s", rc, out);
    rc = run2("train --data " T "good.h5 --save none --warmup-steps 3 --warmup-goyal" COMMON, out, sizeof out);
    if (rc != 0 || strstr(out, "warning")) fail_msg("the same on a peak of 2 x --lr warns (%d):\n%s", rc, out);
}

/* Dropout before a regression loss trains, with one warning line (rank 0's
 * alone) naming the layer; without dropout, no warning. */
static void test_dropout_regression_warning(void **state) {
    (void)state;
    static char out[1 << 16];
    remove(T "regression.h5");
    int rc = run_nndist(1, "data synth --out " T "regression.h5 --rows 64 --test-rows 16 --features 4 --targets 2", out,
                        sizeof out, TIMEOUT_S);
    if (rc != 0) fail_msg("data synth failed (%d):\n%s", rc, out);
    rc = run2("train --data " T "regression.h5 --loss l2 --dropout 0.2 --save none" COMMON, out, sizeof out);
    if (rc != 0) fail_msg("dropout + l2 failed (%d):\n%s", rc, out);
    if (count(out, "nndist: warning:") != 1 || !strstr(out, "dropout (last on hidden layer 1) before --loss l2"))
        fail_msg("want one warning line about dropout before --loss l2, got:\n%s", out);
    rc = run2("train --data " T "regression.h5 --loss l1 --save none" COMMON, out, sizeof out);
    if (rc != 0) fail_msg("l1 failed (%d):\n%s", rc, out);
    if (count(out, "nndist: warning:") != 0) fail_msg("a warning without dropout:\n%s", out);
}

int main(void) {
    mkdir(NNDIST_TEST_TMP, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_things),           cmocka_unit_test(test_bad_contents),
        cmocka_unit_test(test_failed_run_keeps_outputs), cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_good_run_and_summary),     cmocka_unit_test(test_dropout_regression_warning),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
