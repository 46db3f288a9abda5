/* Observers: what watches a sync run and acts between steps and epochs
 * (the weight average, the profile, the progress and epoch lines, early
 * stopping and the best epoch, checkpoints, the plateau schedule). Each is
 * one part behind this ops table, in its own file under observers/; setup
 * keeps those the options ask for, in table order, and the loop calls them
 * without naming any. */
#ifndef NNDIST_OBSERVER_H
#define NNDIST_OBSERVER_H

#include <stdbool.h>

#include "nndist/train.h"

/* A step as the observers see it, after its update (tr->state.step counts it). */
typedef struct {
    int epoch;        /* 1-based */
    long done, steps; /* steps of the epoch done (this one included), and in all */
    long first;       /* the epoch's first step run (after a resume) */
    double loss_sum;  /* the epoch's loss and hits so far */
    double correct;
    const double *phase_before; /* (ND_PHASES) tr->state.phase before this step */
    double epoch_start;         /* nd_comm_time() when the epoch's steps began */
    double *paused;             /* seconds of the epoch not spent training (checkpoints add theirs) */
    double step_loss;           /* this step's mean loss over the global batch */
    double grad_norm;           /* its gradient's norm before clipping on a --log-every step, else NaN */
} nd_step_view;

typedef struct {
    const char *name;
    /* Whether the run wants it (from its options), decided at setup. */
    bool (*wanted)(const nd_trainer *tr);
    /* After each step. Collective where the observer says so. */
    nd_status (*after_step)(nd_trainer *tr, const nd_step_view *v, nd_error *err);
    /* After each epoch's evaluation (e filled, tr->state.last = *e after the
     * report); may set *stop. Collective where the observer says so. */
    nd_status (*after_epoch)(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err);
    /* After the last epoch (not after a stop signal), before the final
     * line. Collective where the observer says so. */
    nd_status (*at_end)(nd_trainer *tr, nd_error *err);
} nd_observer_part;

extern const nd_observer_part nd_observer_straggle, nd_observer_ema, nd_observer_profile, nd_observer_report,
    nd_observer_best, nd_observer_checkpoint, nd_observer_plateau, nd_observer_ensemble;

/* --straggle's sleep of (factor - 1) x compute_seconds on the straggling
 * rank (nothing elsewhere); async workers call it after each gradient. */
void nd_straggle_sleep(const nd_trainer *tr, double compute_seconds);

/* The table, in the order they run: one entry per observer. */
extern const nd_observer_part *const nd_observer_parts[];
extern const int nd_num_observer_parts;

#define ND_MAX_OBSERVERS 12

#endif
