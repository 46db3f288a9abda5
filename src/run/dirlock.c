/* One run per checkpoint directory: rank 0 holds DIR/.nndist.lock
 * ("host pid slurm-job") while the run lives. Two runs writing the same
 * checkpoints would interleave them and prune each other's files. A lock
 * left by a process that is gone (same host, no such nndist process), or by
 * an earlier incarnation of the same Slurm job (a requeue), is taken over. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train_internal.h"

static void lock_path(const nd_trainer *tr, char *out, size_t cap) {
    snprintf(out, cap, "%s/.nndist.lock", tr->cfg.checkpoint_dir);
}

/* This process's lock text: "host pid job\n". */
static void lock_text(char *out, size_t cap) {
    char host[256] = "?";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
    const char *job = getenv("SLURM_JOB_ID");
    snprintf(out, cap, "%s %ld %s\n", host, (long)getpid(), job && *job ? job : "-");
}

/* 1 if pid on this host is a live nndist process (a zombie is not). */
static int nndist_alive_now(long pid) {
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
    char path[64], stat[512] = "";
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1; /* no /proc: trust kill() */
    const int got = fgets(stat, sizeof stat, f) != NULL;
    fclose(f);
    /* "pid (comm) state ...": comm may hold spaces, the state follows the last ')'. */
    const char *open = strchr(stat, '('), *close = strrchr(stat, ')');
    if (!got || !open || !close) return 1;
    const char state = close[1] == ' ' ? close[2] : '?';
    return !strncmp(open + 1, "nndist", 6) && state != 'Z' && state != 'X';
}

/* Alive, after up to 5 s for it to go: the ranks of a job just killed by
 * its launcher may outlive mpirun's exit for a moment, and a requeue or a
 * script's rerun starts right then. */
static int nndist_alive(long pid) {
    for (int i = 0; i < 50; ++i) {
        if (!nndist_alive_now(pid)) return 0;
        const struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return 1;
}

/* Writes our lock over path atomically (a temporary file renamed). */
static int take_over(const char *path, const char *text) {
    char tmp[ND_PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    const int bad = fputs(text, f) < 0 || fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static nd_status lock_dir(nd_trainer *tr, nd_error *err) {
    char path[ND_PATH_MAX + 32], mine[400];
    lock_path(tr, path, sizeof path);
    lock_text(mine, sizeof mine);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
        const size_t n = strlen(mine);
        const int bad = write(fd, mine, n) != (ssize_t)n;
        close(fd);
        if (bad) return ND_FAIL(err, ND_ERR_IO, "%s: cannot write the lock (%s)", path, strerror(errno));
        tr->dir_locked = 1;
        return ND_OK;
    }
    if (errno != EEXIST) return ND_FAIL(err, ND_ERR_IO, "%s: cannot create the lock (%s)", path, strerror(errno));
    char host[256] = "", job[64] = "", my_host[256] = "", my_job[64] = "";
    long pid = 0, my_pid = 0;
    FILE *f = fopen(path, "r");
    const int parsed = f && fscanf(f, "%255s %ld %63s", host, &pid, job) == 3;
    if (f) fclose(f);
    sscanf(mine, "%255s %ld %63s", my_host, &my_pid, my_job);
    const int same_host = parsed && !strcmp(host, my_host);
    const int same_job = parsed && strcmp(job, "-") && !strcmp(job, my_job);
    if (parsed && !same_job && (!same_host || nndist_alive(pid)))
        return ND_FAIL(err, ND_ERR_ARG,
                       "--checkpoint-dir %s is in use by another run (host %s, pid %ld%s%s): two runs would mix "
                       "their checkpoints; wait for it, choose another directory, or remove %s if that run is gone",
                       tr->cfg.checkpoint_dir, host, pid, strcmp(job, "-") ? ", Slurm job " : "",
                       strcmp(job, "-") ? job : "", path);
    /* Gone, an earlier run of this job, or unreadable: ours now. */
    if (take_over(path, mine) != 0)
        return ND_FAIL(err, ND_ERR_IO, "%s: cannot take over the stale lock (%s)", path, strerror(errno));
    tr->dir_locked = 1;
    return ND_OK;
}

nd_status nd_train_lock_dir(nd_trainer *tr, nd_error *err) {
    nd_status st = ND_OK;
    if (tr->rank == 0 && tr->cfg.checkpoint_dir[0]) st = lock_dir(tr, err);
    return nd_train_agree(tr, st, err);
}

void nd_train_unlock_dir(nd_trainer *tr) {
    if (!tr->dir_locked) return;
    char path[ND_PATH_MAX + 32], mine[400], text[400] = "";
    lock_path(tr, path, sizeof path);
    lock_text(mine, sizeof mine);
    FILE *f = fopen(path, "r");
    const int ours = f && fgets(text, sizeof text, f) && !strcmp(text, mine);
    if (f) fclose(f);
    if (ours) unlink(path); /* never another run's lock */
    tr->dir_locked = 0;
}
