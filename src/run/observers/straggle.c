/* --straggle RANK:FACTOR, a study hook: rank RANK computes FACTOR times
 * slower, by sleeping (FACTOR - 1) times its own compute time after each
 * step (sync: an observer; async workers call nd_straggle_sleep after each
 * gradient). Off the hot path of every other run: setup keeps it only
 * when asked for. */
#include <time.h>

#include "../train_internal.h"

void nd_straggle_sleep(const nd_trainer *tr, double compute_seconds) {
    if (tr->rank != tr->plan.straggle_rank) return;
    const double extra = (tr->plan.straggle_factor - 1.0) * compute_seconds;
    struct timespec ts = {(time_t)extra, (long)((extra - (double)(time_t)extra) * 1e9)};
    nanosleep(&ts, NULL);
}

static bool wanted(const nd_trainer *tr) { return tr->rank == tr->plan.straggle_rank; }

/* The step's compute: its data, forward and backward phases. The sleep
 * counts as backward time, so the phases still add up to the step. */
static nd_status after_step(nd_trainer *tr, const nd_step_view *v, nd_error *err) {
    (void)err;
    double compute = 0.0;
    for (int p = ND_PHASE_DATA; p <= ND_PHASE_BACKWARD; ++p) compute += tr->state.phase[p] - v->phase_before[p];
    const double t0 = nd_comm_time();
    nd_straggle_sleep(tr, compute);
    tr->state.phase[ND_PHASE_BACKWARD] += nd_comm_time() - t0;
    return ND_OK;
}

const nd_observer_part nd_observer_straggle = {.name = "straggle", .wanted = wanted, .after_step = after_step};
