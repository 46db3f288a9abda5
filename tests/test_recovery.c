/* The program under `mpiexec -n 2`: a rank killed with SIGKILL in the middle
 * of training ends the job promptly, `--resume auto` then finishes the run
 * with exactly the result of a run that was never interrupted; `eval` and
 * `info` read what it wrote. */
#include <dirent.h>
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
#include "nndist/data.h"
#include "program.h"

#define T NNDIST_TEST_TMP "/"
#define RECIPE " --data " T "recovery.h5 --hidden 256,128 --batch 32 --epochs 3 --opt adam --lr 0.002 --progress none"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int count_checkpoints(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, "ckpt-step", 9) && !strstr(e->d_name, ".tmp.")) ++n;
    closedir(d);
    return n;
}

/* The checksum_model attribute of a checkpoint ("" if unreadable). */
static void read_checksum(const char *path, char out[32]) {
    out[0] = '\0';
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return;
    hid_t a = H5Aopen(f, "checksum_model", H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    if (a >= 0 && H5Tis_variable_str(t) > 0) { /* format 3: variable-length UTF-8 */
        hid_t mem = H5Tcopy(H5T_C_S1);
        char *v = NULL;
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5T_CSET_UTF8);
        if (H5Aread(a, mem, &v) >= 0 && v) snprintf(out, 32, "%s", v);
        if (v) H5free_memory(v);
        H5Tclose(mem);
    } else if (a >= 0 && H5Tget_size(t) < 32) {
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5Tget_size(t));
        H5Aread(a, mem, out);
        out[H5Tget_size(t)] = '\0';
        H5Tclose(mem);
    }
    H5Tclose(t), H5Aclose(a), H5Fclose(f);
}

static int setup(void **state) {
    (void)state;
    mkdir(NNDIST_TEST_TMP, 0777);
    remove(T "recovery.h5");
    nd_synth_config s = {8000,  2000, 0, 64, 6,
                         0.25f, 5,    0, 0,  {0, 0, 0}}; /* overlapping classes: accuracy well below 1 */
    nd_error err = {0};
    return nd_synth_write(&s, T "recovery.h5", &err) == ND_OK ? 0 : -1;
}

static void test_kill_rank_then_resume(void **state) {
    (void)state;
    static char out[1 << 16];
    /* The reference: never interrupted. */
    system("rm -rf " T "straight-ckpt");
    int rc = run_nndist(2, "train" RECIPE " --summary " T "straight.json --checkpoint-dir " T "straight-ckpt", out,
                        sizeof out, 120);
    if (rc != 0) fail_msg("uninterrupted run failed (%d):\n%s", rc, out);

    /* The same run, slowed down (--straggle does not change the arithmetic)
     * so that it is surely killed in the middle. */
    system("rm -rf " T "killed-ckpt");
    pid_t job = fork();
    if (job == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd,
                 "exec %s %s 2 --oversubscribe %s train" RECIPE " --straggle 1:15 --checkpoint-dir " T
                 "killed-ckpt --checkpoint-every 40 > " T "killed.log 2>&1",
                 MPIEXEC_EXECUTABLE, MPIEXEC_NUMPROC_FLAG, NNDIST_BIN);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    const double t0 = now();
    while (count_checkpoints(T "killed-ckpt") < 2 && now() - t0 < 60) pause_ms(20);
    assert_true(count_checkpoints(T "killed-ckpt") >= 2);
    /* SIGKILL one rank: the newest nndist process whose command starts with the binary. */
    assert_int_equal(system("pkill -KILL -n -f '^[^ ]*nndist train --data " T "recovery.h5'"), 0);
    const double killed = now();
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(job, &status, WNOHANG)) == 0 && now() - killed < 30) pause_ms(20);
    const double seconds = now() - killed;
    if (done == 0) {
        kill(job, SIGKILL);
        system("pkill -KILL -f '^[^ ]*nndist train --data " T "recovery.h5'");
        waitpid(job, &status, 0);
        fail_msg("the job was still running 30 s after a rank was killed");
    }
    print_message("  job ended %.2f s after a rank was SIGKILLed (exit status %d)\n", seconds,
                  WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Resume from the newest checkpoint and finish. */
    rc = run_nndist(2, "train" RECIPE " --checkpoint-dir " T "killed-ckpt --resume auto --summary " T "resumed.json",
                    out, sizeof out, 120);
    if (rc != 0 || !strstr(out, "resuming from")) fail_msg("resume failed (%d):\n%s", rc, out);
    char a[8192], b[8192];
    assert_true(read_file(T "straight.json", a, sizeof a) > 0);
    assert_true(read_file(T "resumed.json", b, sizeof b) > 0);
    const double acc_a = json_number(a, "test_accuracy"), acc_b = json_number(b, "test_accuracy");
    const double loss_a = json_number(a, "test_loss"), loss_b = json_number(b, "test_loss");
    print_message("  uninterrupted: accuracy %.4f loss %.6f; killed + resumed: accuracy %.4f loss %.6f\n", acc_a,
                  loss_a, acc_b, loss_b);
    assert_true(acc_a == acc_b);
    assert_true(loss_a == loss_b);
    /* Bit for bit: the final weights' checksums agree. */
    char ca[32], cb[32];
    read_checksum(T "straight-ckpt/ckpt-step00000375.h5", ca);
    read_checksum(T "killed-ckpt/ckpt-step00000375.h5", cb);
    print_message("  final model checksums %s and %s\n", ca, cb);
    assert_true(ca[0] != '\0');
    assert_string_equal(ca, cb);
}

/* eval of the final checkpoint gives the accuracy training reported, and
 * info describes the files. */
static void test_eval_and_info(void **state) {
    (void)state;
    static char out[1 << 16];
    char summary[8192];
    assert_true(read_file(T "resumed.json", summary, sizeof summary) > 0);
    const double acc = json_number(summary, "test_accuracy");
    char args[1024];
    /* 3 epochs of 4000-row shards at batch 32: 125 steps each. */
    snprintf(args, sizeof args,
             "eval --checkpoint " T "killed-ckpt/ckpt-step00000375.h5 --data " T "recovery.h5 --json");
    int rc = run_nndist(2, args, out, sizeof out, 60);
    if (rc != 0) fail_msg("eval failed (%d):\n%s", rc, out);
    const double eval_acc = json_number(out, "accuracy");
    print_message("  eval accuracy %.4f, training reported %.4f\n", eval_acc, acc);
    assert_true(fabs(eval_acc - acc) < 1e-6);
    assert_non_null(strstr(out, "\"confusion\": [["));
    rc = run_nndist(1, "info " T "killed-ckpt/ckpt-step00000375.h5", out, sizeof out, 60);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "model       64-256:relu-128:relu-6"));
    assert_non_null(strstr(out, "step 375"));
    rc = run_nndist(1, "info " T "recovery.h5", out, sizeof out, 60);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "/train x 8000 x 64 float"));
    /* A mismatched model is refused with one line. */
    rc = run_nndist(2,
                    "train --data " T "recovery.h5 --hidden 64 --epochs 1 --progress none --resume " T
                    "killed-ckpt/ckpt-step00000375.h5",
                    out, sizeof out, 60);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "architecture 64-256:relu-128:relu-6, this run has 64-64:relu-6")) fail_msg("%s", out);
}

/* nndist sanity passes its three checks on a learnable set, and fails (with
 * a non-zero exit) when the rate is too small to overfit 20 examples. */
static void test_sanity_command(void **state) {
    (void)state;
    static char out[1 << 14];
    int rc = run_nndist(1, "sanity --data " T "recovery.h5 --hidden 64", out, sizeof out, 60);
    if (rc != 0 || !strstr(out, "3 of 3 checks passed")) fail_msg("sanity (%d):\n%s", rc, out);
    rc = run_nndist(1, "sanity --data " T "recovery.h5 --hidden 64 --lr 1e-9", out, sizeof out, 60);
    assert_int_not_equal(rc, 0);
    if (!strstr(out, "FAIL  overfits 20 examples")) fail_msg("%s", out);
    /* With batch norm and dropout, and a hinge loss: the initial loss is
     * C - 1 and the overfit runs without dropout. */
    rc = run_nndist(1,
                    "sanity --data " T "recovery.h5 --arch 64-48:bn:relu:drop0.3-6 --loss hinge --opt adam --lr 0.003",
                    out, sizeof out, 60);
    if (rc != 0 || !strstr(out, "3 of 3 checks passed") || !strstr(out, "expected about 5.0000"))
        fail_msg("sanity hinge (%d):\n%s", rc, out);
}

/* nndist gradcheck passes on a network with every kind of layer, prints a
 * line per parameter group, and the program exits 0. */
static void test_gradcheck_command(void **state) {
    (void)state;
    static char out[1 << 14];
    int rc = run_nndist(1,
                        "gradcheck --data " T "recovery.h5 --arch 64:drop0.1-24:bn:elu:drop0.2-12:maxout2-6 --l1 1e-3",
                        out, sizeof out, 60);
    if (rc != 0 || !strstr(out, ": PASS (fails above 1e-03)")) fail_msg("gradcheck (%d):\n%s", rc, out);
    const char *groups[] = {"dense0/W", "dense0/b", "bn0/gamma", "bn0/beta",   "dense1/W",
                            "dense1/b", "dense2/W", "dense2/b",  "l2 penalty", "l1 penalty"};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; ++i)
        if (!strstr(out, groups[i])) fail_msg("gradcheck: no line for %s:\n%s", groups[i], out);
}

/* nndist bench on 2 ranks: the model's FLOP count (computed here
 * independently), a GEMM rate and allreduce times that are positive, and
 * the JSON line launch/bench reads. */
static void test_bench_command(void **state) {
    (void)state;
    static char out[1 << 14];
    int rc =
        run_nndist(2, "bench --hidden 64,32 --inputs 50 --outputs 6 --batch 16 --seconds 0.01 --iters 20 --bucket-kb 4",
                   out, sizeof out, 60);
    if (rc != 0) fail_msg("bench (%d):\n%s", rc, out);
    const char *json = strrchr(out, '{');
    assert_non_null(json);
    const double flops = 4.0 * 50 * 64 + 6.0 * 64 * 32 + 6.0 * 32 * 6; /* no input gradient for the first layer */
    assert_true(json_number(json, "flops_per_sample") == flops);
    assert_true(json_number(json, "ranks") == 2);
    assert_true(json_number(json, "gemm_gflops") > 0.01);
    assert_true(json_number(json, "gemm_gflops_min") <= json_number(json, "gemm_gflops"));
    assert_true(json_number(json, "allreduce_ms") > 0 && json_number(json, "bucketed_allreduce_ms") > 0 &&
                json_number(json, "cold_allreduce_ms") > 0);
    assert_true(json_number(json, "p2p_latency_us") > 0 && json_number(json, "p2p_ms") > 0);
    const double params = 50 * 64 + 64 + 64 * 32 + 32 + 32 * 6 + 6;
    assert_true(json_number(json, "parameters") == params);
    assert_true(strstr(out, "gemm layer 2 input-grad") != NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_rank_then_resume), cmocka_unit_test(test_eval_and_info),
        cmocka_unit_test(test_sanity_command),        cmocka_unit_test(test_gradcheck_command),
        cmocka_unit_test(test_bench_command),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
