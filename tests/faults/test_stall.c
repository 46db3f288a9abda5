/* Fault matrix, stalls: one rank of a running job is frozen with SIGSTOP
 * and the job must end on its own within the --timeout bound, with a line
 * that names the cause, instead of hanging until the batch system kills it.
 * Sync with the newest rank (rank 1) and the oldest (rank 0) frozen; async
 * with the server and with the worker frozen. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fault_checkpoint.h"
#include "fault_common.h"

#define T NNDIST_TEST_TMP "/"
#define DATA T "stall.h5"
#define TIMEOUT_S 3
#define MATCH "'^[^ ]*nndist train --data " DATA "'"

static int setup(void **state) {
    (void)state;
    return fault_write_data(DATA, 60000, 64, 6, 7);
}

/* Starts `run` on 2 ranks, freezes the oldest or newest rank after 1.5 s
 * and returns how long the job took to end after that; the output is in
 * log. */
static double freeze_one(const char *run, int oldest, const char *log, int *exit_status) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s %s 2 --oversubscribe %s %s > %s 2>&1", MPIEXEC_EXECUTABLE, MPIEXEC_NUMPROC_FLAG,
             NNDIST_BIN, run, log);
    pid_t job = fault_spawn(cmd);
    nanosleep(&(struct timespec){1, 500000000}, NULL);
    char kill_cmd[512];
    snprintf(kill_cmd, sizeof kill_cmd, "pkill -STOP %s -f " MATCH, oldest ? "-o" : "-n");
    const int stopped = system(kill_cmd) == 0;
    const double t0 = fault_now();
    int status = 0;
    const int done = fault_wait(job, 40, &status); /* a hang is killed, and said */
    const double seconds = fault_now() - t0;
    system("pkill -KILL -f " MATCH " 2>/dev/null");
    *exit_status = fault_exit_code(status);
    return stopped ? (done ? seconds : INFINITY) : NAN;
}

/* 1 if line holds one of the '|'-separated phrases of causes. */
static int names_cause(const char *line, const char *causes) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", causes);
    for (char *save = NULL, *c = strtok_r(buf, "|", &save); c; c = strtok_r(NULL, "|", &save))
        if (strstr(line, c)) return 1;
    return 0;
}

static void check(const char *name, const char *mode, int oldest, const char *cause, double bound) {
    char log[512], out[1 << 16], dir[512], run[1024], cmd[2048];
    snprintf(log, sizeof log, T "stall-%s.log", name);
    snprintf(dir, sizeof dir, T "stall-%s-ckpt", name);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    system(cmd);
    /* About 5 s of training, checkpointing as it goes; frozen after 1.5 s. */
    snprintf(run, sizeof run,
             "train --data " DATA " --hidden 256 --epochs 40 --progress none --threads 1 --timeout %d"
             " --mode %s --checkpoint-dir %s --checkpoint-every 500 --keep 3",
             TIMEOUT_S, mode, dir);
    int status = 0;
    const double seconds = freeze_one(run, oldest, log, &status);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = '\0';
    if (f) fclose(f);
    const char *line = strstr(out, "nndist: error:");
    char first[600] = "";
    if (line) snprintf(first, sizeof first, "%.*s", (int)strcspn(line, "\n"), line);
    /* What it left loads, and the same command with --resume auto finishes. */
    char newest[1024], why[1024];
    long step = -1;
    const int loads = fault_newest_loads(dir, newest, sizeof newest, &step, why);
    snprintf(cmd, sizeof cmd, "timeout -k 5 120 %s %s 2 --oversubscribe %s %s --resume auto > %s-resume.log 2>&1",
             MPIEXEC_EXECUTABLE, MPIEXEC_NUMPROC_FLAG, NNDIST_BIN, run, dir);
    const int resumed = system(cmd) == 0;
    print_message(
        "  %s: ended %.2f s after SIGSTOP, exit %d: %s\n    newest checkpoint left: step %ld, %s; resume %s\n", name,
        seconds, status, first, step, loads ? "loads" : why, resumed ? "finished" : "FAILED");
    if (!(seconds <= bound) || status == 0 || !names_cause(first, cause))
        fail_msg("%s: want an exit within %g s naming '%s'; got %.2f s, exit %d:\n%s", name, bound, cause, seconds,
                 status, out);
    assert_true(loads);
    assert_true(resumed);
}

/* The frozen rank may stop between steps, inside the allreduce, or in a
 * collective at an epoch's edge (the watchdog's thread names each). */
#define IN_ALLREDUCE "did not complete within 3 s"

/* Rank 1 frozen: rank 0 names it at the arrival, or its watchdog thread
 * names the allreduce. */
static void test_sync_newest_frozen(void **state) {
    (void)state;
    check("sync-rank1", "sync", 0, "rank 1 did not arrive within 3 s|" IN_ALLREDUCE, TIMEOUT_S + 3.0);
}

/* Rank 0 frozen: rank 1 names it at the arrival (the shared-memory sum of
 * one node: every rank sees who came), or hears nothing from it (MPI's
 * arrival, after a grace, so that a live rank 0 would have spoken first),
 * or names the allreduce. */
static void test_sync_oldest_frozen(void **state) {
    (void)state;
    check("sync-rank0", "sync", 1, "rank 0 did not arrive within 3 s|no word from rank 0|" IN_ALLREDUCE,
          TIMEOUT_S * 1.5 + 1.0 + 3.0);
}

/* Deterministic mode has no arrival barrier: the watchdog times its
 * fixed-point allreduce. */
static void test_deterministic_frozen(void **state) {
    (void)state;
    check("sync-deterministic", "sync --deterministic", 0, IN_ALLREDUCE "|did not arrive within 3 s", TIMEOUT_S + 3.0);
}

/* --sync-bn exchanges batch-norm sums inside forward and backward, before
 * the step's arrival. */
static void test_sync_bn_frozen(void **state) {
    (void)state;
    check("sync-bn", "sync --batch-norm --sync-bn", 0, IN_ALLREDUCE "|did not arrive within 3 s", TIMEOUT_S + 3.0);
}

static void test_async_server_frozen(void **state) {
    (void)state;
    check("async-server", "async", 1, "no answer from rank 0", TIMEOUT_S + 3.0);
}

static void test_async_worker_frozen(void **state) {
    (void)state;
    check("async-worker", "async", 0, "waiting for the next gradient: no message from any rank", TIMEOUT_S + 3.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_newest_frozen),   cmocka_unit_test(test_sync_oldest_frozen),
        cmocka_unit_test(test_deterministic_frozen), cmocka_unit_test(test_sync_bn_frozen),
        cmocka_unit_test(test_async_server_frozen),  cmocka_unit_test(test_async_worker_frozen),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
