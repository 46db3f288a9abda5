/* One run per checkpoint directory: rank 0 holds DIR/.nndist.lock
 * ("host pid slurm-job restart-count") while the run lives. Two runs
 * writing the same checkpoints would interleave them and prune each
 * other's files. A lock left by a process that is gone (same host, no such
 * live nndist process), or by an earlier incarnation of the same Slurm job
 * (a requeue: a higher SLURM_RESTART_COUNT), is taken over. */
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

/* This process's lock text: "host pid job restart\n" (Slurm's job id and
 * SLURM_RESTART_COUNT, which a requeue raises; "-" and 0 outside Slurm). */
static void lock_text(char *out, size_t cap) {
    char host[256] = "?";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
    const char *job = getenv("SLURM_JOB_ID"), *restart = getenv("SLURM_RESTART_COUNT");
    snprintf(out, cap, "%s %ld %s %ld\n", host, (long)getpid(), job && *job ? job : "-",
             restart && *restart ? strtol(restart, NULL, 10) : 0L);
}

typedef struct {
    char host[256], job[64];
    long pid, restart;
} lock_holder;

static int parse_lock(const char *text, lock_holder *h) {
    return sscanf(text, "%255s %ld %63s %ld", h->host, &h->pid, h->job, &h->restart) == 4;
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

/* A complete lock file under a temporary name (so no reader ever sees a
 * half-written one); 0 or -1. */
static int write_temporary(const char *tmp, const char *text) {
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    const int bad = fputs(text, f) < 0;
    return fclose(f) != 0 || bad ? -1 : 0;
}

/* 1 if the lock at path says `mine`. */
static int holds(const char *path, const char *mine) {
    char text[400] = "";
    FILE *f = fopen(path, "r");
    const int got = f && fgets(text, sizeof text, f);
    if (f) fclose(f);
    return got && !strcmp(text, mine);
}

static nd_status lock_dir(nd_trainer *tr, nd_error *err) {
    char path[ND_PATH_MAX + 32], tmp[ND_PATH_MAX + 64], mine[400], text[400] = "";
    lock_path(tr, path, sizeof path);
    lock_text(mine, sizeof mine);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (write_temporary(tmp, mine) != 0) {
        unlink(tmp);
        return ND_FAIL(err, ND_ERR_IO, "%s: cannot write the lock (%s)", path, strerror(errno));
    }
    /* link() fails if the lock exists: of two runs starting at once, one wins. */
    if (link(tmp, path) == 0) {
        unlink(tmp);
        tr->dir_locked = 1;
        return ND_OK;
    }
    const int link_errno = errno;
    lock_holder them = {0}, me = {0};
    FILE *f = link_errno == EEXIST ? fopen(path, "r") : NULL;
    const int parsed = f && fgets(text, sizeof text, f) && parse_lock(text, &them);
    if (f) fclose(f);
    parse_lock(mine, &me);
    if (link_errno != EEXIST || !parsed) {
        unlink(tmp);
        if (link_errno != EEXIST)
            return ND_FAIL(err, ND_ERR_IO, "%s: cannot create the lock (%s)", path, strerror(link_errno));
        return ND_FAIL(err, ND_ERR_ARG,
                       "--checkpoint-dir %s: its lock %s is not one nndist wrote, or another run is writing it "
                       "right now; remove it if no run uses the directory",
                       tr->cfg.checkpoint_dir, path);
    }
    /* Ours to take: an earlier incarnation of this Slurm job (a requeue has a
     * higher restart count; any host), or a process gone from this host. */
    const int requeued = strcmp(me.job, "-") && !strcmp(them.job, me.job) && them.restart < me.restart;
    const int gone = !strcmp(them.host, me.host) && !nndist_alive(them.pid);
    if (!requeued && !gone) {
        unlink(tmp);
        return ND_FAIL(err, ND_ERR_ARG,
                       "--checkpoint-dir %s is in use by another run (host %s, pid %ld%s%s): two runs would mix "
                       "their checkpoints; wait for it, choose another directory, or remove %s if that run is gone",
                       tr->cfg.checkpoint_dir, them.host, them.pid, strcmp(them.job, "-") ? ", Slurm job " : "",
                       strcmp(them.job, "-") ? them.job : "", path);
    }
    /* Replace it, then check that no other run replaced it at the same time. */
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return ND_FAIL(err, ND_ERR_IO, "%s: cannot take over the stale lock (%s)", path, strerror(e));
    }
    const struct timespec settle = {0, 50 * 1000 * 1000};
    nanosleep(&settle, NULL);
    if (!holds(path, mine))
        return ND_FAIL(err, ND_ERR_ARG, "--checkpoint-dir %s: another run took over its stale lock at the same time",
                       tr->cfg.checkpoint_dir);
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
