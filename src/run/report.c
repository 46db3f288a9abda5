#include "nndist/report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The terminal rank 0's output reaches, or "" if it is not one. Under
 * mpirun a rank's stdout is a pseudo-terminal that mpirun forwards,
 * whatever mpirun's own stdout is; so when our parent is the launcher, ask
 * about *its* stdout (Linux /proc; elsewhere isatty only). */
static void terminal_path(char *out, size_t cap) {
    out[0] = '\0';
    if (!isatty(fileno(stdout))) return;
    char path[64], name[64] = "", target[256];
    snprintf(path, sizeof path, "/proc/%ld/comm", (long)getppid());
    FILE *f = fopen(path, "r");
    if (f && !fgets(name, sizeof name, f)) name[0] = '\0';
    if (f) fclose(f);
    if (!f ||
        (strncmp(name, "mpirun", 6) && strncmp(name, "mpiexec", 7) && strncmp(name, "orterun", 7) &&
         strncmp(name, "orted", 5) && strncmp(name, "prte", 4))) {
        snprintf(out, cap, "/dev/stdout");
        return;
    }
    snprintf(path, sizeof path, "/proc/%ld/fd/1", (long)getppid());
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = '\0';
    if (!strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8)) snprintf(out, cap, "%s", target);
}

/* Columns of that terminal: its size, else $COLUMNS, else 80. */
static int terminal_width(const char *tty) {
    struct winsize ws = {0};
    int fd = open(tty, O_RDONLY | O_NOCTTY | O_NONBLOCK);
    if (fd >= 0) {
        const int got = ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0;
        close(fd);
        if (got) return ws.ws_col;
    }
    const char *c = getenv("COLUMNS");
    const int cols = c ? atoi(c) : 0;
    return cols > 0 ? cols : 80;
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

/* The step of a --log-every line ({"epoch": E, "step": S, "kind": "step", ...}), or -1. */
static long line_step(const char *line) {
    int e = 0;
    long step = -1;
    char kind[8] = "";
    if (sscanf(line, "{\"epoch\": %d, \"step\": %ld, \"kind\": \"%4[a-z]\"", &e, &step, kind) == 3 &&
        !strcmp(kind, "step"))
        return step;
    return -1;
}

typedef struct {
    FILE *old;
    int keep_before;
    long keep_through_step;
} kept_lines;

static void copy_kept(FILE *f, const void *ctx) {
    const kept_lines *k = ctx;
    char line[65536];
    while (fgets(line, sizeof line, k->old)) {
        const size_t n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') break; /* a torn last line (the writer was killed) */
        const int e = line_epoch(line);
        const long step = line_step(line);
        if (e > 0 && (e < k->keep_before || (e == k->keep_before && step >= 0 && step <= k->keep_through_step)))
            fputs(line, f);
    }
}

nd_status nd_report_open(nd_report *r, int active, nd_progress_kind progress, const char *metrics_path,
                         int keep_before_epoch, long keep_through_step, nd_error *err) {
    memset(r, 0, sizeof *r);
    r->active = active;
    r->out = stdout;
    if (!active) return ND_OK;
    char tty[256];
    terminal_path(tty, sizeof tty);
    r->width = tty[0] ? terminal_width(tty) : 0;
    r->progress = progress != ND_PROGRESS_AUTO ? progress : tty[0] ? ND_PROGRESS_BAR : ND_PROGRESS_PLAIN;
    if (!metrics_path || !metrics_path[0]) return ND_OK;
    if (keep_before_epoch > 0) {
        /* Rewritten atomically with the lines to keep: a kill now loses nothing. */
        kept_lines k = {.old = fopen(metrics_path, "r"),
                        .keep_before = keep_before_epoch,
                        .keep_through_step = keep_through_step};
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
        /* The bar takes what the terminal leaves (at most 24 columns), so the
         * line never wraps; a carriage return redraws it in place. */
        char text[160];
        const int len = snprintf(text, sizeof text, "] %ld/%ld  loss %.4f  %.0f samples/s  ETA %s", step, steps,
                                 running_loss, samples_per_s, eta);
        char head[48];
        const int hl = snprintf(head, sizeof head, "epoch %d/%d [", epoch, epochs);
        const int room = (r->width > 0 ? r->width : 80) - 1 - hl - len;
        const int width = room < 24 ? (room > 0 ? room : 0) : 24;
        char bar[25];
        const int fill = steps > 0 ? (int)(width * step / steps) : 0;
        for (int i = 0; i < width; ++i) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        const int cut = (r->width > 0 ? r->width : 80) - 1 - hl - width; /* what of text fits */
        fprintf(r->out, "\r\033[K%s%s%.*s", head, bar, cut > 0 ? cut : 0, text);
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
