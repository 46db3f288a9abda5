#include "nndist/report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Under mpirun a rank's stdout is a pseudo-terminal that mpirun forwards,
 * whatever mpirun's own stdout is; so when our parent is the launcher, ask
 * whether *its* stdout is a terminal (Linux /proc; elsewhere isatty only). */
static int stdout_is_terminal(void) {
    if (!isatty(fileno(stdout))) return 0;
    char path[64], name[64] = "", target[256];
    snprintf(path, sizeof path, "/proc/%ld/comm", (long)getppid());
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    if (!fgets(name, sizeof name, f)) name[0] = '\0';
    fclose(f);
    if (strncmp(name, "mpirun", 6) && strncmp(name, "mpiexec", 7) && strncmp(name, "orterun", 7) &&
        strncmp(name, "orted", 5) && strncmp(name, "prte", 4))
        return 1;
    snprintf(path, sizeof path, "/proc/%ld/fd/1", (long)getppid());
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = '\0';
    return !strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8);
}

const char *const nd_progress_names[] = {[ND_PROGRESS_AUTO] = "auto",
                                         [ND_PROGRESS_BAR] = "bar",
                                         [ND_PROGRESS_PLAIN] = "plain",
                                         [ND_PROGRESS_NONE] = "none",
                                         NULL};

/* The epoch of a metrics line ({"epoch": E, ...}), or 0. */
static int line_epoch(const char *line) {
    int e = 0;
    return sscanf(line, "{\"epoch\": %d", &e) == 1 ? e : 0;
}

typedef struct {
    FILE *old;
    int keep_before;
} kept_lines;

static void copy_kept(FILE *f, const void *ctx) {
    const kept_lines *k = ctx;
    char line[65536];
    while (fgets(line, sizeof line, k->old)) {
        const size_t n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') break; /* a torn last line (the writer was killed) */
        const int e = line_epoch(line);
        if (e > 0 && e < k->keep_before) fputs(line, f);
    }
}

nd_status nd_report_open(nd_report *r, int active, nd_progress_kind progress, const char *metrics_path,
                         int keep_before_epoch, nd_error *err) {
    memset(r, 0, sizeof *r);
    r->active = active;
    r->out = stdout;
    if (!active) return ND_OK;
    r->progress = progress != ND_PROGRESS_AUTO ? progress : stdout_is_terminal() ? ND_PROGRESS_BAR : ND_PROGRESS_PLAIN;
    if (!metrics_path || !metrics_path[0]) return ND_OK;
    if (keep_before_epoch > 0) {
        /* Rewritten atomically with the lines to keep: a kill now loses nothing. */
        kept_lines k = {.old = fopen(metrics_path, "r"), .keep_before = keep_before_epoch};
        if (k.old) {
            nd_status st = nd_write_file_atomic(metrics_path, copy_kept, &k, err);
            fclose(k.old);
            if (st != ND_OK) return nd_error_prefix(err, "--metrics: ");
        }
    }
    r->metrics = fopen(metrics_path, keep_before_epoch > 0 ? "a" : "w");
    if (!r->metrics) return ND_FAIL(err, ND_ERR_IO, "--metrics %s: %s", metrics_path, strerror(errno));
    return ND_OK;
}

void nd_report_close(nd_report *r) {
    if (r->metrics) fclose(r->metrics);
    r->metrics = NULL;
}

static void format_eta(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%02ld:%02ld", t / 60, t % 60);
}

void nd_report_progress(nd_report *r, double now, int epoch, int epochs, long step, long steps, double running_loss,
                        double samples_per_s, double eta_s) {
    if (!r->active || r->progress == ND_PROGRESS_NONE) return;
    const int bar = r->progress == ND_PROGRESS_BAR;
    if (r->last_progress == 0.0) r->last_progress = now;
    /* The bar redraws a few times a second and once at the end; plain lines
     * come every 10 s of a long epoch (the epoch line ends each epoch). */
    if (bar ? (now - r->last_progress < 0.2 && step != steps) : (now - r->last_progress < 10.0)) return;
    r->last_progress = now;
    char eta[32];
    format_eta(eta, sizeof eta, eta_s);
    if (bar) {
        enum { WIDTH = 24 };
        char bar[WIDTH + 1];
        int fill = steps > 0 ? (int)(WIDTH * step / steps) : 0;
        for (int i = 0; i < WIDTH; ++i) bar[i] = i < fill ? '#' : '.';
        bar[WIDTH] = '\0';
        fprintf(r->out, "\r\033[Kepoch %d/%d [%s] %ld/%ld  loss %.4f  %.0f samples/s  ETA %s", epoch, epochs, bar, step,
                steps, running_loss, samples_per_s, eta);
        r->bar_open = 1;
    } else {
        fprintf(r->out, "  epoch %d/%d step %ld/%ld loss %.4f %.0f samples/s ETA %s\n", epoch, epochs, step, steps,
                running_loss, samples_per_s, eta);
    }
    fflush(r->out);
}

void nd_report_progress_end(nd_report *r) {
    if (r->active && r->bar_open) {
        fputs("\r\033[K", r->out);
        fflush(r->out);
    }
    r->bar_open = 0;
    r->last_progress = 0.0;
}

nd_status nd_write_file_atomic(const char *path, void (*body)(FILE *, const void *), const void *ctx, nd_error *err) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ND_FAIL(err, ND_ERR_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ND_FAIL(err, ND_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    body(f, ctx);
    int bad = ferror(f);
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ND_FAIL(err, ND_ERR_IO, "%s: cannot write (%s); any earlier file is untouched", path, strerror(e));
    }
    return ND_OK;
}
