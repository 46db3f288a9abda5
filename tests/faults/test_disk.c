/* Fault matrix, storage: rank 0 SIGKILLed while it writes a checkpoint, the
 * checkpoint disk filling up (sync and async), and the checkpoint directory
 * turning read-only mid-run or being read-only from the start. For each:
 * the job ends non-zero within its bound with a line naming the cause, the
 * newest checkpoint left behind loads and passes its checksums, no
 * temporary is left as if it were a checkpoint, and `--resume auto` (after
 * the operator frees space or makes the directory writable) finishes.
 *
 * The disk faults need a small filesystem of our own: the test moves into a
 * private mount namespace and mounts a tmpfs there, so nothing outside the
 * test sees it and nothing is left mounted if the test dies. That needs root
 * (CAP_SYS_ADMIN), which launch/test has; a file mode would not do, since
 * root writes through any mode. Without it (a user's launch/test) only the
 * case that needs no mount runs, and the test exits with SKIPPED_EXIT, which
 * ctest reports as skipped (SKIP_RETURN_CODE), saying why. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fault_checkpoint.h"
#include "fault_common.h"

#define T NNDIST_TEST_TMP "/"
#define DATA T "disk.h5"
#define MPIRUN MPIEXEC_EXECUTABLE " " MPIEXEC_NUMPROC_FLAG
#define SMALL " --hidden 256,128 --batch 32 --epochs 3 --opt adam --progress none --threads 1"
#define LARGE " --hidden 1024,1024 --batch 32 --epochs 2 --opt adam --progress none --threads 1"

enum { SKIPPED_EXIT = 77 }; /* tests/CMakeLists.txt: SKIP_RETURN_CODE */

static int setup(void **state) {
    (void)state;
    return fault_write_data(DATA, 12000, 64, 5, 11) != 0 ? -1 : 0;
}

/* A case that failed half-way leaves no job running behind it. */
static int kill_leftovers(void **state) {
    (void)state;
    system("pkill -KILL -f '^[^ ]*mpiexec.* train --data " DATA "' 2>/dev/null;"
           " pkill -KILL -f '^[^ ]*nndist train --data " DATA "' 2>/dev/null");
    while (waitpid(-1, NULL, WNOHANG) > 0) continue;
    return 0;
}

/* ---- watching a checkpoint directory ---- */

typedef struct {
    int fd;
    char buf[8192];
    ssize_t len, pos;
} dir_watch;

static void watch_open(dir_watch *w, const char *dir) {
    memset(w, 0, sizeof *w);
    w->fd = inotify_init1(IN_NONBLOCK);
    assert_true(w->fd >= 0);
    assert_true(inotify_add_watch(w->fd, dir, IN_CREATE | IN_MOVED_TO) >= 0);
}

/* 1 once job has ended (it is left to be reaped). */
static int job_over(pid_t job) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)job, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == job;
}

/* The next file created ('c') or renamed into the directory ('m': a
 * checkpoint completed) within limit seconds, its name into name; 0 if none
 * came or the job ended without one. */
static int watch_next(dir_watch *w, pid_t job, double limit, char *name, size_t cap) {
    const double t0 = fault_now();
    for (;;) {
        while (w->pos < w->len) {
            const struct inotify_event *e = (const struct inotify_event *)(w->buf + w->pos);
            w->pos += (ssize_t)(sizeof *e + e->len);
            if (!e->len) continue;
            snprintf(name, cap, "%s", e->name);
            return (e->mask & IN_MOVED_TO) ? 'm' : 'c';
        }
        const double left = limit - (fault_now() - t0);
        if (left <= 0) return 0;
        struct pollfd p = {w->fd, POLLIN, 0};
        if (poll(&p, 1, left < 0.2 ? (int)(left * 1000) + 1 : 200) <= 0) {
            if (job_over(job)) return 0;
            continue;
        }
        w->len = read(w->fd, w->buf, sizeof w->buf);
        w->pos = 0;
        if (w->len < 0) w->len = 0;
    }
}

/* The pid in a writer's temporary "ckpt-step<N>.h5.tmp.<pid>", or -1. */
static pid_t writer_of(const char *name) {
    const char *t = strstr(name, ".h5.tmp.");
    return t ? (pid_t)atol(t + 8) : -1;
}

/* Waits for n completed checkpoints; 1 if they came. */
static int wait_checkpoints(dir_watch *w, pid_t job, int n, double limit) {
    char name[256];
    int done = 0;
    const double t0 = fault_now();
    while (done < n) {
        const int ev = watch_next(w, job, limit - (fault_now() - t0), name, sizeof name);
        if (!ev) return 0;
        done += ev == 'm';
    }
    return 1;
}

/* ---- helpers ---- */

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void read_log(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* 1 if dir holds a writer's temporary. */
static int has_temporary(const char *dir) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q '\\.tmp\\.'", dir);
    return system(cmd) == 0;
}

/* A fresh directory, or a fresh tmpfs of `bytes` mounted on it (bytes > 0). */
static void fresh_dir(const char *dir, long bytes) {
    char cmd[700];
    umount2(dir, MNT_DETACH);
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
    assert_int_equal(system(cmd), 0);
    if (bytes > 0) {
        char opts[64];
        snprintf(opts, sizeof opts, "size=%ld,mode=0755", bytes);
        if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0) fail_msg("mount tmpfs on %s: %s", dir, strerror(errno));
    }
}

static int resume_finishes(const char *run, const char *dir, int ranks) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "timeout -k 5 180 " MPIRUN " %d --oversubscribe " NNDIST_BIN " train --data " DATA
             "%s --checkpoint-dir %s --resume auto > %s-resume.log 2>&1",
             ranks, run, dir, dir);
    const int ok = system(cmd) == 0;
    return ok && !has_temporary(dir);
}

/* The checks every fault ends with, and the matrix row: the newest
 * checkpoint left behind loads, then `--resume auto` with `run` finishes. */
static void verdict(const char *fault, const char *dir, double seconds, double bound, int status, const char *cause,
                    const char *run, int ranks) {
    char log[1 << 16], logname[600], newest[1024], why[1024];
    snprintf(logname, sizeof logname, "%s.log", dir);
    read_log(logname, log, sizeof log);
    long step = -1;
    const int loads = fault_newest_loads(dir, newest, sizeof newest, &step, why);
    const int resumed = resume_finishes(run, dir, ranks);
    const char *line = strstr(log, cause);
    while (line && line > log && line[-1] != '\n') --line; /* the whole line */
    const char *end = line ? strchr(line, '\n') : NULL;
    print_message("  %s: job over %.2f s after the fault (bound %.0f s), status %d; newest checkpoint left: step %ld,"
                  " %s; resume %s\n    message: %.*s\n",
                  fault, seconds, bound, fault_exit_code(status), step, loads ? "loads" : "does NOT load",
                  resumed ? "finished" : "FAILED", line ? (int)(end ? end - line : (long)strlen(line)) : 30,
                  line ? line : "(cause not found in the log)");
    if (!loads) print_message("    %s\n", why);
    if (!line) print_message("    log:\n%s\n", log);
    assert_true(seconds < bound);
    assert_int_not_equal(fault_exit_code(status), 0);
    assert_non_null(line);
    assert_true(loads);
    assert_true(resumed);
}

/* Remounts dir's tmpfs (flags, options); retried for a moment, since a
 * read-only remount is refused while a file there is open for writing. */
static void remount(const char *dir, unsigned long flags, const char *options) {
    const double t0 = fault_now();
    int rc;
    while ((rc = mount(NULL, dir, NULL, MS_REMOUNT | flags, options)) != 0 && errno == EBUSY && fault_now() - t0 < 5)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    if (rc != 0) fail_msg("remount %s: %s", dir, strerror(errno));
}

/* ---- the faults ---- */

/* SIGKILL of rank 0 between creating a checkpoint's temporary and renaming
 * it: the kill is aimed at the writer's pid, read off the temporary's name,
 * the moment inotify reports it, after one checkpoint has completed. */
static void test_rank0_killed_while_writing(void **state) {
    (void)state;
    const char *dir = T "disk-writer";
    char cmd[4096], name[256], tmp[600];
    int mid_write = 0, status = 0, attempts = 0;
    double seconds = INFINITY;
    for (attempts = 1; attempts <= 3 && !mid_write; ++attempts) {
        fresh_dir(dir, 0);
        dir_watch w;
        watch_open(&w, dir);
        snprintf(cmd, sizeof cmd,
                 "exec " MPIRUN " 2 --oversubscribe " NNDIST_BIN " train --data " DATA LARGE
                 " --checkpoint-dir %s --checkpoint-every 20 --keep 100 > %s.log 2>&1",
                 dir, dir);
        pid_t job = fault_spawn(cmd);
        int ev = wait_checkpoints(&w, job, 1, 120);
        pid_t writer = -1;
        while (ev && writer < 0) {
            ev = watch_next(&w, job, 60, name, sizeof name);
            if (ev == 'c') writer = writer_of(name);
        }
        if (writer > 0) {
            kill(writer, SIGKILL);
            const double t0 = fault_now();
            snprintf(tmp, sizeof tmp, "%s/%s", dir, name);
            mid_write = access(tmp, F_OK) == 0; /* not renamed: it died inside the write */
            fault_wait(job, 30, &status);
            seconds = fault_now() - t0;
        } else {
            fault_wait(job, 0, &status);
        }
        close(w.fd);
        print_message("  attempt %d: %s\n", attempts,
                      mid_write ? "rank 0 killed inside a checkpoint write" : "the write finished before the kill");
    }
    assert_true(mid_write);
    assert_true(has_temporary(dir)); /* the torn write is there, beside the good checkpoints */
    verdict("rank 0 SIGKILLed mid-write", dir, seconds, 15, status, "signal 9",
            LARGE " --checkpoint-every 20 --keep 100", 2);
}

/* Bytes of one checkpoint of `run`, written by a 1-epoch run on one rank. */
static long checkpoint_bytes(const char *run) { /* run: a sync one */
    const char *dir = T "disk-size";
    char cmd[4096], newest[1024], why[1024];
    fresh_dir(dir, 0);
    snprintf(cmd, sizeof cmd, NNDIST_BIN " train --data " DATA "%s --epochs 1 --checkpoint-dir %s > %s.log 2>&1", run,
             dir, dir);
    assert_int_equal(system(cmd), 0);
    long step;
    assert_true(fault_newest_loads(dir, newest, sizeof newest, &step, why));
    return file_size(newest);
}

/* The checkpoint tmpfs holds one and a half checkpoints, --keep 1: the
 * second checkpoint cannot be written. Afterwards the operator frees space
 * (the tmpfs grows) and resumes. */
static void disk_full(const char *mode, int ranks, const char *fault) {
    char dir[256], cmd[4096], name[256], run[512];
    snprintf(dir, sizeof dir, T "disk-full-%s", mode);
    snprintf(run, sizeof run, SMALL " --mode %s --checkpoint-every 60 --keep 1", mode);
    const long bytes = checkpoint_bytes(SMALL); /* async's holds the same arrays */
    fresh_dir(dir, bytes + bytes / 2);
    dir_watch w;
    watch_open(&w, dir);
    snprintf(cmd, sizeof cmd,
             "exec " MPIRUN " %d --oversubscribe " NNDIST_BIN " train --data " DATA "%s"
             " --checkpoint-dir %s > %s.log 2>&1",
             ranks, run, dir, dir);
    pid_t job = fault_spawn(cmd);
    assert_true(wait_checkpoints(&w, job, 1, 120));
    int ev = 0;
    while ((ev = watch_next(&w, job, 60, name, sizeof name)) == 'm') continue; /* the next write starts */
    const double t0 = fault_now();
    int status = 0;
    const int ended = fault_wait(job, 60, &status);
    const double seconds = fault_now() - t0;
    close(w.fd);
    assert_int_equal(ev, 'c');
    assert_true(ended);
    assert_false(has_temporary(dir)); /* the torn write was removed */
    char grow[64];
    snprintf(grow, sizeof grow, "size=%ld", 6 * bytes);
    remount(dir, 0, grow);
    print_message("  one checkpoint: %ld bytes; tmpfs of %ld bytes\n", bytes, bytes + bytes / 2);
    verdict(fault, dir, seconds, 10, status, "No space left on device", run, ranks);
}

static void test_disk_full_sync(void **state) {
    (void)state;
    disk_full("sync", 2, "disk full at a checkpoint (sync, 2 ranks)");
}

static void test_disk_full_async(void **state) {
    (void)state;
    disk_full("async", 3, "disk full at a checkpoint (async, 1 server + 2 workers)");
}

/* Two checkpoints written, then the directory's filesystem is remounted
 * read-only: the next checkpoint fails. Then it is made writable again. */
static void test_read_only_mid_run(void **state) {
    (void)state;
    const char *dir = T "disk-readonly";
    const char *run = SMALL " --checkpoint-every 60 --keep 100";
    char cmd[4096];
    fresh_dir(dir, 64L << 20);
    dir_watch w;
    watch_open(&w, dir);
    snprintf(cmd, sizeof cmd,
             "exec " MPIRUN " 2 --oversubscribe " NNDIST_BIN " train --data " DATA "%s"
             " --checkpoint-dir %s > %s.log 2>&1",
             run, dir, dir);
    pid_t job = fault_spawn(cmd);
    assert_true(wait_checkpoints(&w, job, 2, 120));
    remount(dir, MS_RDONLY, NULL);
    const double t0 = fault_now();
    int status = 0;
    const int ended = fault_wait(job, 60, &status);
    const double seconds = fault_now() - t0;
    close(w.fd);
    assert_true(ended);
    remount(dir, 0, NULL);
    /* The bound: the steps up to the next checkpoint (60 of them), then the failure. */
    verdict("checkpoint directory read-only mid-run", dir, seconds, 20, status, "Read-only file system", run, 2);
}

/* Read-only from the start, holding a run's checkpoints: the job stops
 * during setup, and the checkpoints are as they were. */
static void test_read_only_at_start(void **state) {
    (void)state;
    const char *dir = T "disk-readonly-start";
    const char *run = SMALL " --epochs 1 --keep 100";
    char cmd[4096], before[1 << 12], after[1 << 12], list[700];
    fresh_dir(dir, 64L << 20);
    snprintf(cmd, sizeof cmd,
             MPIRUN " 2 --oversubscribe " NNDIST_BIN " train --data " DATA "%s --checkpoint-dir %s"
                    " > %s.log 2>&1",
             run, dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(list, sizeof list, "cd %s && sha256sum * > %s.sums", dir, dir);
    assert_int_equal(system(list), 0);
    snprintf(list, sizeof list, "%s.sums", dir);
    read_log(list, before, sizeof before);
    remount(dir, MS_RDONLY, NULL);
    snprintf(cmd, sizeof cmd,
             "exec " MPIRUN " 2 --oversubscribe " NNDIST_BIN " train --data " DATA SMALL " --keep 100"
             " --checkpoint-dir %s --resume auto > %s.log 2>&1",
             dir, dir);
    const double t0 = fault_now();
    int status = 0;
    const int ended = fault_wait(fault_spawn(cmd), 60, &status);
    const double seconds = fault_now() - t0;
    assert_true(ended);
    snprintf(list, sizeof list, "cd %s && sha256sum * > %s.sums", dir, dir);
    assert_int_equal(system(list), 0);
    snprintf(list, sizeof list, "%s.sums", dir);
    read_log(list, after, sizeof after);
    assert_true(before[0] != '\0');
    assert_string_equal(before, after); /* nothing there was touched */
    remount(dir, 0, NULL);
    verdict("checkpoint directory read-only at the start", dir, seconds, 30, status, "cannot write there",
            SMALL " --keep 100", 2);
}

int main(void) {
    const struct CMUnitTest unprivileged[] = {
        cmocka_unit_test_teardown(test_rank0_killed_while_writing, kill_leftovers),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_rank0_killed_while_writing, kill_leftovers),
        cmocka_unit_test_teardown(test_disk_full_sync, kill_leftovers),
        cmocka_unit_test_teardown(test_disk_full_async, kill_leftovers),
        cmocka_unit_test_teardown(test_read_only_mid_run, kill_leftovers),
        cmocka_unit_test_teardown(test_read_only_at_start, kill_leftovers),
    };
    /* Mounts made from here on are this process's and its children's only. */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        const char *why = strerror(errno);
        const int failed = cmocka_run_group_tests(unprivileged, setup, NULL);
        if (failed) return failed;
        printf("SKIPPED: the disk-full and read-only cases need a private mount namespace for their tmpfs "
               "(%s): they run as root, as in CI\n",
               why);
        return SKIPPED_EXIT;
    }
    return cmocka_run_group_tests(tests, setup, NULL);
}
