/* `nndist lr-find`: the learning-rate range test (Smith 2017, "Cyclical
 * learning rates for training neural networks", section 3.3; fastai's
 * lr_find). The configured network trains from its initialization for
 * --steps steps at a rate that grows geometrically from --lr-min to
 * --lr-max, the optimizer's state (momentum, Adam's moments) carried along
 * the ramp; it stops early once the smoothed loss passes 4x its best (the
 * run diverged). Out come the loss against the rate (PREFIX.csv, and
 * PREFIX.png drawn by plot.c) and two rates read off the smoothed curve,
 * one of them suggested. Rates are --lr values: at --ref-batch samples,
 * scaled to the global batch as train scales --lr, so the suggestion is
 * meant for the same ranks, batch and --ref-batch.
 *
 * Collective: every rank sets up the trainer and takes the steps (sync
 * mode; nd_trainer_step); rank 0 decides when to stop, and writes. No
 * checkpoint, summary, metrics or model file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/cli.h"
#include "nndist/commands.h"
#include "nndist/train.h"
#include "plot.h"

typedef struct {
    float lr_min, lr_max, smooth;
    int steps;
    char out[ND_PATH_MAX];
} lrfind_config;

#define F(type_, f, range) ND_CLI_RANGED(type_, lrfind_config, f, range)
static const nd_cli_option lrfind_options[] = {
    {"lr-min", F(FLOAT, lr_min, "> 0"), "1e-7", "the ramp's first rate (as --lr)"},
    {"lr-max", F(FLOAT, lr_max, "> 0"), "10", "the ramp's last rate (as --lr)"},
    {"steps", F(INT, steps, ">= 10"), "300", "steps of the ramp (fewer when the loss diverges first)"},
    {"smooth", F(FLOAT, smooth, "[0, 1)"), "0.9",
     "decay of the loss's moving average (debiased; its lag is about s/(1-s) steps)"},
    {"out", ND_CLI_STR, offsetof(lrfind_config, out), sizeof(((lrfind_config *)0)->out), NULL, NULL, "lr-find",
     "write PREFIX.csv (step,lr,loss,smoothed_loss) and PREFIX.png (800x500)"},
};
#undef F
enum { NUM_OPTIONS = (int)(sizeof lrfind_options / sizeof lrfind_options[0]) };

/* The picture's size (docs/training.md says it). */
enum { PLOT_WIDTH = 800, PLOT_HEIGHT = 500 };

/* The run has diverged once the smoothed loss passes this many times its best. */
#define DIVERGED_FACTOR 4.0

/* Takes this command's options ("--name V" or "--name=V") out of argv into
 * cfg; what is left is train's. */
static nd_status take_options(lrfind_config *cfg, int *argc, char **argv, nd_error *err) {
    ND_TRY(nd_cli_defaults(lrfind_options, NUM_OPTIONS, cfg, err));
    for (int i = 0; i < *argc;) {
        const char *arg = argv[i], *value = NULL;
        int used = 0;
        const nd_cli_option *o = NULL;
        for (int k = 0; k < NUM_OPTIONS && !o; ++k) {
            const size_t len = strlen(lrfind_options[k].name);
            if (strncmp(arg, "--", 2) || strncmp(arg + 2, lrfind_options[k].name, len)) continue;
            if (arg[2 + len] == '=') o = &lrfind_options[k], value = arg + 3 + len, used = 1;
            else if (arg[2 + len] == '\0') o = &lrfind_options[k], value = i + 1 < *argc ? argv[i + 1] : NULL, used = 2;
        }
        if (!o) {
            ++i;
            continue;
        }
        if (!value) return ND_FAIL(err, ND_ERR_ARG, "--%s needs a value", o->name);
        char source[64];
        snprintf(source, sizeof source, "--%s", o->name);
        ND_TRY(nd_cli_set(lrfind_options, NUM_OPTIONS, cfg, o->name, value, source, err));
        memmove(argv + i, argv + i + used, sizeof(char *) * (size_t)(*argc - i - used));
        *argc -= used;
    }
    ND_TRY(nd_cli_check(lrfind_options, NUM_OPTIONS, cfg, err));
    if (!(cfg->lr_min < cfg->lr_max))
        return ND_FAIL(err, ND_ERR_ARG, "--lr-min %g must be below --lr-max %g", (double)cfg->lr_min,
                       (double)cfg->lr_max);
    if (!cfg->out[0]) return ND_FAIL(err, ND_ERR_ARG, "--out: the prefix of the files is empty");
    return ND_OK;
}

static void usage(void) {
    printf("usage: [mpirun -np N] nndist lr-find --data FILE [lr-find options] [train options]\n"
           "The learning-rate range test: --steps training steps from the configured network's initialization at a\n"
           "rate growing geometrically from --lr-min to --lr-max (as --lr: scaled to the global batch like it),\n"
           "stopped when the smoothed loss passes 4x its best; writes the loss against the rate as CSV and PNG and\n"
           "prints a suggested --lr with how it was chosen (docs/training.md). Sync mode only; writes no model,\n"
           "checkpoint, summary or metrics. Takes every `nndist train` option and --config file (train's --lr-min,\n"
           "cosine's floor, is this command's ramp start here).\n\nlr-find options:\n");
    nd_cli_help(lrfind_options, NUM_OPTIONS, NULL, 0, stdout, 0);
}

/* What the curve says: the rate at its steepest descent, and the rate at
 * its minimum (whose tenth is the other rule). Indices into the points. */
typedef struct {
    int min_at;      /* smallest smoothed loss */
    int steep_at;    /* most negative slope before it (-1: none) */
    double slope;    /* there, in loss per decade of rate */
    int skip, width; /* points left out at the start, and the half-width of the slope's difference */
} curve_reading;

/* The slope is a centred difference over +-width points (a few percent of
 * the ramp: one step's difference is mostly noise), looked for after the
 * first tenth of the points (the flat start, where the moving average is
 * still filling) and up to the minimum (after it the loss rises). */
static curve_reading read_curve(const double *lr, const double *smooth, int n, int steps) {
    curve_reading r = {.min_at = 0, .steep_at = -1, .slope = 0.0};
    for (int i = 1; i < n; ++i)
        if (smooth[i] < smooth[r.min_at]) r.min_at = i;
    r.width = steps / 40 > 1 ? steps / 40 : 1;
    r.skip = steps / 10;
    for (int i = r.skip; i <= r.min_at; ++i) {
        const int a = i - r.width < 0 ? 0 : i - r.width, b = i + r.width > n - 1 ? n - 1 : i + r.width;
        if (b <= a) continue;
        const double slope = (smooth[b] - smooth[a]) / (log10(lr[b]) - log10(lr[a]));
        if (r.steep_at < 0 || slope < r.slope) r.steep_at = i, r.slope = slope;
    }
    return r;
}

static nd_status write_csv(const char *path, const double *lr, const double *loss, const double *smooth, int n,
                           nd_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return ND_FAIL(err, ND_ERR_IO, "--out: cannot write %s", path);
    fprintf(f, "step,lr,loss,smoothed_loss\n");
    for (int i = 0; i < n; ++i) fprintf(f, "%d,%.9g,%.9g,%.9g\n", i, lr[i], loss[i], smooth[i]);
    const int failed = ferror(f);
    if (fclose(f) != 0 || failed) return ND_FAIL(err, ND_ERR_IO, "--out: writing %s failed", path);
    return ND_OK;
}

/* The y axis spans the smoothed curve up to its minimum (the blow-up
 * after it leaves through the top) and the raw loss below it. */
static nd_status write_png(const char *path, const lrfind_config *c, const double *lr, const double *loss,
                           const double *smooth, int n, int min_at, double suggested, const char *suggested_rule,
                           double other, const char *other_rule, nd_error *err) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i <= min_at; ++i)
        if (isfinite(smooth[i])) lo = fmin(lo, smooth[i]), hi = fmax(hi, smooth[i]);
    for (int i = 0; i < n; ++i)
        if (isfinite(loss[i]) && loss[i] > lo - (hi - lo)) lo = fmin(lo, loss[i]);
    if (!(hi > lo)) hi = lo + 1.0;
    const double pad = 0.04 * (hi - lo);
    char suggested_label[96], other_label[96];
    snprintf(suggested_label, sizeof suggested_label, "suggested %.3g (%s)", suggested, suggested_rule);
    snprintf(other_label, sizeof other_label, "%.3g (%s)", other, other_rule);
    nd_plot p = {.width = PLOT_WIDTH,
                 .height = PLOT_HEIGHT,
                 .x = lr,
                 .n = n,
                 .x_lo = c->lr_min,
                 .x_hi = c->lr_max,
                 .y_lo = lo - pad < 0.0 && lo >= 0.0 ? 0.0 : lo - pad,
                 .y_hi = hi + pad,
                 .series = {{loss, {180, 200, 235}, 1, "loss"}, {smooth, {20, 70, 180}, 2, "smoothed loss"}},
                 .num_series = 2,
                 .x_label = "learning rate (--lr)",
                 .y_label = "training loss",
                 .title = "nndist lr-find"};
    if (isfinite(other) && other > 0)
        p.markers[p.num_markers++] = (nd_plot_marker){other, {230, 150, 30}, 1, other_label};
    if (isfinite(suggested) && suggested > 0)
        p.markers[p.num_markers++] = (nd_plot_marker){suggested, {210, 30, 30}, 0, suggested_label};
    return nd_plot_write_png(&p, path, err);
}

/* The command line: this command's options, then train's; the refusals. */
static nd_status parse(lrfind_config *c, nd_train_config *cfg, int argc, char **argv, int *help, nd_error *err) {
    ND_TRY(take_options(c, &argc, argv, err));
    ND_TRY(nd_train_config_parse(cfg, argc, argv, help, err));
    if (*help) return ND_OK;
    if (cfg->mode != ND_MODE_SYNC)
        return ND_FAIL(err, ND_ERR_ARG,
                       "lr-find: --mode %s: the range test takes one rate a step for the whole job: sync mode only",
                       nd_mode_names[cfg->mode]);
    if (cfg->resume[0])
        return ND_FAIL(err, ND_ERR_ARG, "lr-find: --resume %s: the range test starts from the initialization",
                       cfg->resume);
    if (cfg->opt == ND_OPT_LBFGS)
        return ND_FAIL(err, ND_ERR_ARG,
                       "lr-find: --opt lbfgs: the range test takes minibatch steps; L-BFGS finds its own step");
    /* The test leaves nothing behind but its curve. */
    cfg->checkpoint_dir[0] = cfg->summary[0] = cfg->metrics[0] = '\0';
    snprintf(cfg->save, sizeof cfg->save, "none");
    cfg->progress = ND_PROGRESS_NONE;
    return ND_OK;
}

nd_status nd_cmd_lr_find(nd_comm *comm, int argc, char **argv, int *agreed, nd_error *err) {
    const int rank = nd_comm_rank(comm);
    lrfind_config c;
    nd_train_config cfg;
    int help = 0;
    *agreed = 1;
    nd_status st = parse(&c, &cfg, argc, argv, &help, err);
    if (st != ND_OK && rank != 0) err->msg[0] = '\0'; /* every rank parsed alike: rank 0 speaks */
    if (st != ND_OK) return st;
    if (help) {
        if (rank == 0) usage();
        return ND_OK;
    }
    char csv[ND_PATH_MAX + 8], png[ND_PATH_MAX + 8];
    snprintf(csv, sizeof csv, "%s.csv", c.out);
    snprintf(png, sizeof png, "%s.png", c.out);
    const int n_max = c.steps;
    double *lr = calloc((size_t)n_max, sizeof(double)), *loss = calloc((size_t)n_max, sizeof(double)),
           *smooth = calloc((size_t)n_max, sizeof(double));
    st = lr && loss && smooth ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "lr-find: cannot allocate %d points", n_max);
    if (st == ND_OK && rank == 0) { /* a prefix that cannot be written fails now, not after the run */
        FILE *f = fopen(csv, "w");
        if (!f) st = ND_FAIL(err, ND_ERR_IO, "--out %s: cannot write %s", c.out, csv);
        else fclose(f);
    }
    st = nd_comm_agree(comm, st, err);
    nd_trainer *tr = NULL;
    if (st == ND_OK) st = nd_trainer_setup(&tr, &cfg, comm, err); /* agreed by every rank */
    const int quiet = cfg.quiet;
    if (st == ND_OK && rank == 0 && !quiet) {
        printf("lr-find: %d steps, --lr from %g to %g (x%.4g a step); stops when the smoothed loss passes %gx its "
               "best\n",
               c.steps, (double)c.lr_min, (double)c.lr_max, pow((double)c.lr_max / c.lr_min, 1.0 / (c.steps - 1)),
               DIVERGED_FACTOR);
        fflush(stdout);
    }
    /* The ramp. Rank 0's smoothed loss decides when to stop, so every rank
     * stops after the same step. */
    int n = 0, diverged = 0;
    double avg = 0.0, best = INFINITY;
    for (int s = 0; st == ND_OK && s < c.steps; ++s) {
        const double rate = c.lr_min * pow((double)c.lr_max / c.lr_min, (double)s / (c.steps - 1));
        double l;
        st = nd_trainer_step(tr, (float)rate, &l, err);
        if (st != ND_OK) {
            *agreed = 0; /* a step's failure may be this rank's alone: the caller ends the job */
            break;
        }
        avg = c.smooth * avg + (1.0 - c.smooth) * l;
        const double sm = avg / (1.0 - pow(c.smooth, s + 1)); /* debiased: the first values are not pulled to 0 */
        lr[n] = rate, loss[n] = l, smooth[n] = sm, ++n;
        if (sm < best) best = sm;
        double stop = !isfinite(sm) || sm > DIVERGED_FACTOR * best;
        st = nd_comm_bcast_f64(comm, &stop, 1, 0, err);
        if (st != ND_OK) *agreed = 0;
        if (st == ND_OK && rank == 0 && !quiet && ((s + 1) % (c.steps / 10) == 0 || stop)) {
            printf("  step %4d/%d  lr %-10.4g loss %-10.4g smoothed %.4g\n", s + 1, c.steps, rate, l, sm);
            fflush(stdout);
        }
        if (stop) {
            diverged = 1;
            break;
        }
    }
    nd_trainer_free(tr);
    if (st != ND_OK) {
        free(lr), free(loss), free(smooth);
        return st;
    }
    if (rank == 0) {
        const curve_reading r = read_curve(lr, smooth, n, c.steps);
        const double at_min = lr[r.min_at], min_rule = at_min / 10.0;
        const double steep = r.steep_at >= 0 ? lr[r.steep_at] : NAN;
        if (diverged && !isfinite(smooth[n - 1]))
            printf("lr-find: stopped at step %d of %d (lr %.4g): the step's loss or gradient is not finite: diverged\n",
                   n, c.steps, lr[n - 1]);
        else if (diverged)
            printf("lr-find: stopped at step %d of %d (lr %.4g): the smoothed loss %.4g passed %gx its best %.4g: "
                   "diverged\n",
                   n, c.steps, lr[n - 1], smooth[n - 1], DIVERGED_FACTOR, smooth[r.min_at]);
        else
            printf("lr-find: all %d steps taken without diverging (the loss may still fall past --lr-max %g)\n", n,
                   (double)c.lr_max);
        printf("lr-find: smallest smoothed loss %.4g at lr %.4g; that rate / 10 = %.4g\n", smooth[r.min_at], at_min,
               min_rule);
        if (r.steep_at >= 0)
            printf("lr-find: steepest descent of the smoothed loss at lr %.4g (%.3g per decade of rate)\n", steep,
                   r.slope);
        else printf("lr-find: no steepest descent: the smallest loss came within the first tenth of the steps\n");
        /* The suggestion: the minimum's rate over 10. On Fashion-MNIST it
         * trains the default network as well as the hand-tuned rate; the
         * steepest point of the curve is reported beside it
         * (docs/training.md, "Finding a learning rate"). */
        const int usable = r.min_at >= r.skip && r.min_at > 0;
        if (usable)
            printf("lr-find: suggested --lr %.3g (the rate at the smoothed loss's minimum / 10); the steepest descent "
                   "gives %.3g\n",
                   min_rule, steep);
        else
            printf("lr-find: no suggestion: the loss was smallest within the first tenth of the ramp (at lr %.4g); "
                   "lower --lr-min\n",
                   at_min);
        st = write_csv(csv, lr, loss, smooth, n, err);
        if (st == ND_OK)
            st = write_png(png, &c, lr, loss, smooth, n, r.min_at, usable ? min_rule : NAN, "minimum / 10", steep,
                           "steepest descent", err);
        if (st == ND_OK) printf("lr-find: wrote %s and %s\n", csv, png);
        fflush(stdout);
    }
    free(lr), free(loss), free(smooth);
    return nd_comm_agree(comm, st, err);
}
