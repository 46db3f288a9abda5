/* What rank 0 tells the user: resolved configuration, progress within an
 * epoch (a bar on a terminal, plain lines otherwise), one line per epoch,
 * a JSON line per epoch (--metrics) and the run summary (--summary). */
#ifndef NNDIST_REPORT_H
#define NNDIST_REPORT_H

#include <stdio.h>

#include "nndist/status.h"

/* AUTO: a bar when stdout is a terminal, plain lines otherwise. */
typedef enum { ND_PROGRESS_AUTO, ND_PROGRESS_BAR, ND_PROGRESS_PLAIN, ND_PROGRESS_NONE } nd_progress_kind;
extern const char *const nd_progress_names[]; /* indexed by nd_progress_kind, NULL-terminated */

typedef struct {
    int active; /* only rank 0 reports */
    nd_progress_kind progress;
    FILE *out;            /* stdout */
    FILE *metrics;        /* --metrics, or NULL */
    double last_progress; /* time of the last progress output */
    int bar_open;         /* a bar line is on screen without newline */
    int quiet;            /* --quiet: no progress and no epoch lines (metrics still written) */
    int width;            /* columns of the terminal the output reaches, 0 if it is not one */
} nd_report;

/* Resolves ND_PROGRESS_AUTO; opens metrics_path when given: a new run
 * (keep_before_epoch 0) starts it afresh; a resumed run that continues at
 * epoch E (keep_before_epoch E) from step S (keep_through_step) keeps the
 * lines of epochs before E and the --log-every step lines of E up to S,
 * drops any later ones (written after its checkpoint by the run it
 * resumes) and appends, so a requeued job's history has every epoch and
 * step once. Not collective. */
nd_status nd_report_open(nd_report *r, int active, nd_progress_kind progress, const char *metrics_path,
                         int keep_before_epoch, long keep_through_step, nd_error *err);
void nd_report_close(nd_report *r);

/* Within-epoch progress; throttled to a few updates a second (bar) or one
 * line every 10 s (plain). now is nd_comm_time(). */
void nd_report_progress(nd_report *r, double now, int epoch, int epochs, long step, long steps, double running_loss,
                        double samples_per_s, double eta_s);

/* Ends the progress display of the epoch (clears the bar). */
void nd_report_progress_end(nd_report *r);

/* Writes path atomically: to path.tmp, then rename, so an earlier file is
 * never left half-written. body writes the content. */
nd_status nd_write_file_atomic(const char *path, void (*body)(FILE *, const void *), const void *ctx, nd_error *err);

#endif
