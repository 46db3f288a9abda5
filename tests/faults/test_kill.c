/* Fault matrix, deaths: a rank of a running job, checkpointing as it goes,
 * is SIGKILLed. The job must end promptly with a non-zero status, the
 * newest checkpoint left behind must load and pass its checksum, and
 * `--resume auto` must finish the run. Async with 1 server and 2 workers:
 * a worker killed, and the server killed. (Sync: test_recovery.) */
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
#define DATA T "kill.h5"
#define MATCH "'^[^ ]*nndist train --data " DATA "'"
/* 40 epochs of 625 updates: several seconds, so that the kill (after
 * update 100) lands mid-run and the job's end is the fault's doing. */
#define EPOCHS "40"
#define FINAL_STEP (40 * 20000L / 32)
#define RUN                                                                                                      \
    " train --data " DATA " --hidden 64 --epochs " EPOCHS " --batch 32 --progress none --threads 1 --mode async" \
    " --checkpoint-every 50 --keep 100"

static int setup(void **state) {
    (void)state;
    return fault_write_data(DATA, 20000, 32, 5, 9);
}

/* Runs the job in dir (np 3), waits for two checkpoints, SIGKILLs the
 * oldest rank (the server) or the newest (a worker); the seconds from the
 * kill to the job's end, its status in *status. */
static double kill_one(const char *dir, int oldest, int *status) {
    char cmd[4096], rm[600];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    system(rm);
    snprintf(cmd, sizeof cmd, "exec %s %s 3 --oversubscribe %s" RUN " --straggle 1:4 --checkpoint-dir %s > %s.log 2>&1",
             MPIEXEC_EXECUTABLE, MPIEXEC_NUMPROC_FLAG, NNDIST_BIN, dir, dir);
    pid_t job = fault_spawn(cmd);
    char path[700];
    const double t0 = fault_now();
    while (fault_now() - t0 < 60) { /* two checkpoints: the kill lands mid-run */
        nd_checkpoint_name(path, sizeof path, dir, 100);
        if (access(path, F_OK) == 0) break;
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    snprintf(cmd, sizeof cmd, "pkill -KILL %s -f " MATCH, oldest ? "-o" : "-n");
    const int killed = system(cmd) == 0;
    const double tk = fault_now();
    const int done = fault_wait(job, 30, status);
    const double seconds = fault_now() - tk;
    system("pkill -KILL -f " MATCH " 2>/dev/null");
    return killed && done ? seconds : INFINITY;
}

static void check(const char *name, int oldest) {
    char dir[512], newest[1024], cmd[4096];
    snprintf(dir, sizeof dir, T "kill-%s", name);
    int status = 0;
    const double seconds = kill_one(dir, oldest, &status);
    const int code = fault_exit_code(status);
    /* The newest checkpoint is whole. */
    char why[1024];
    long step = -1;
    const int loads = fault_newest_loads(dir, newest, sizeof newest, &step, why);
    /* --resume auto finishes the run. */
    snprintf(cmd, sizeof cmd,
             "timeout -k 5 120 %s %s 3 --oversubscribe %s" RUN " --checkpoint-dir %s --resume auto"
             " > %s-resume.log 2>&1",
             MPIEXEC_EXECUTABLE, MPIEXEC_NUMPROC_FLAG, NNDIST_BIN, dir, dir);
    const int resumed = system(cmd) == 0;
    print_message("  %s killed: job over %.2f s later (status %d); newest checkpoint %s (step %ld) %s; resume %s\n",
                  name, seconds, code, newest, step, loads ? "loads" : "does NOT load",
                  resumed ? "finished" : "FAILED");
    if (!loads) print_message("  %s\n", why);
    assert_true(seconds < 15.0);
    assert_true(step > 0 && step < FINAL_STEP); /* it died mid-run, not after finishing */
    assert_int_not_equal(code, 0);
    assert_true(loads);
    assert_true(resumed);
}

static void test_async_worker_killed(void **state) {
    (void)state;
    check("async-worker", 0);
}

static void test_async_server_killed(void **state) {
    (void)state;
    check("async-server", 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_worker_killed),
        cmocka_unit_test(test_async_server_killed),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
