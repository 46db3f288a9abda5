/* Shared by the fault-matrix tests: their synthetic data, a clock,
 * starting a job, waiting for one that may hang (it is killed then), and
 * its exit code. */
#ifndef NNDIST_FAULT_COMMON_H
#define NNDIST_FAULT_COMMON_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nndist/data.h"

/* A fresh synthetic set at path: rows training and 1000 test rows; 0 or -1
 * as a cmocka group setup returns. */
static int fault_write_data(const char *path, long rows, int features, int classes, uint64_t seed) {
    remove(path);
    nd_synth_config s = {rows, 1000, 0, features, classes, 1.0f, seed, 0, 0, {0, 0, 0}};
    nd_error err = {0};
    return nd_synth_write(&s, path, &err) == ND_OK ? 0 : -1;
}

/* A wait status as a shell reports it: the exit code, or 128 + the signal. */
static int fault_exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

static double fault_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Waits up to `limit` seconds for job; 1 if it ended (status in *status),
 * 0 if it had to be killed. */
static int fault_wait(pid_t job, double limit, int *status) {
    const double t0 = fault_now();
    pid_t done = 0;
    while ((done = waitpid(job, status, WNOHANG)) == 0 && fault_now() - t0 < limit)
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    if (done != 0) return 1;
    kill(job, SIGKILL);
    waitpid(job, status, 0);
    return 0;
}

/* Starts `sh -c cmd` (cmd should exec the job) in the background. */
static pid_t fault_spawn(const char *cmd) {
    pid_t job = fork();
    if (job == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return job;
}

#endif
