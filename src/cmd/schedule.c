/* `nndist schedule`: the learning rate (and momentum) of every step of a
 * training configuration, as CSV, so a schedule can be plotted before it is
 * used. Takes every `train` option, plus --steps, --steps-per-epoch and
 * --ranks (the global batch is ranks x batch). Rank 0 only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/commands.h"
#include "nndist/sched.h"
#include "nndist/train.h"

/* Takes "--name V" (or --name=V) out of argv; returns the value or NULL. */
static const char *take(int *argc, char **argv, const char *name) {
    const size_t len = strlen(name);
    for (int i = 0; i < *argc; ++i) {
        if (strncmp(argv[i], name, len)) continue;
        const char *value = NULL;
        int used = 0;
        if (argv[i][len] == '=') value = argv[i] + len + 1, used = 1;
        else if (argv[i][len] == '\0' && i + 1 < *argc) value = argv[i + 1], used = 2;
        else continue;
        memmove(argv + i, argv + i + used, sizeof(char *) * (size_t)(*argc - i - used));
        *argc -= used;
        return value;
    }
    return NULL;
}

static long parse_positive(const char *text, const char *name, long fallback, nd_error *err, nd_status *st) {
    if (!text) return fallback;
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v <= 0) *st = ND_FAIL(err, ND_ERR_ARG, "%s: '%s' must be a positive integer", name, text);
    return v;
}

nd_status nd_cmd_schedule(int argc, char **argv, nd_error *err) {
    nd_status st = ND_OK;
    const long steps = parse_positive(take(&argc, argv, "--steps"), "--steps", 0, err, &st);
    const long per_epoch = parse_positive(take(&argc, argv, "--steps-per-epoch"), "--steps-per-epoch", 100, err, &st);
    const long ranks = parse_positive(take(&argc, argv, "--ranks"), "--ranks", 1, err, &st);
    ND_TRY(st);
    nd_train_config cfg;
    int help = 0;
    ND_TRY(nd_train_config_parse(&cfg, argc, argv, &help, err));
    if (help) {
        printf("usage: nndist schedule --steps N [--steps-per-epoch S] [--ranks P] [train options]\n"
               "prints step,lr,momentum for every step (CSV); --epochs is taken as N / S\n");
        return ND_OK;
    }
    ND_TRY(nd_cli_check(nd_train_options, nd_train_num_options, &cfg, err)); /* ranges, as train */
    if (steps <= 0) return ND_FAIL(err, ND_ERR_ARG, "schedule: --steps N is required");
    cfg.epochs = (int)((steps + per_epoch - 1) / per_epoch); /* the run the schedule is sized for */
    nd_lr_schedule s;
    ND_TRY(nd_train_make_schedule(&cfg, cfg.batch * (int)ranks, per_epoch, &s, err));
    s.total_steps = steps;
    char why[256];
    if (nd_lr_warmup_issue(&s, why, sizeof why)) fprintf(stderr, "nndist schedule: warning: %s\n", why);
    printf("step,lr,momentum\n");
    for (long t = 0; t < steps; ++t)
        printf("%ld,%.9g,%.6g\n", t, (double)nd_lr_at(&s, t),
               (double)nd_momentum_at(cfg.momentum, cfg.momentum_final, cfg.momentum_epochs, (double)t / per_epoch));
    return ND_OK;
}
