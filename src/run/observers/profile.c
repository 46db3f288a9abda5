/* --profile N: rank 0 prints the time of each phase of the run's first N
 * steps. */
#include <stdio.h>

#include "../train_internal.h"

static bool wanted(const nd_trainer *tr) { return tr->cfg.profile > 0 && tr->report.active; }

static nd_status after_step(nd_trainer *tr, const nd_step_view *v, nd_error *err) {
    (void)err;
    if (tr->state.step > tr->cfg.profile) return ND_OK;
    fprintf(tr->report.out, "profile step %ld:", tr->state.step);
    for (int p = 0; p < ND_PHASES; ++p)
        fprintf(tr->report.out, " %s %.3f ms", nd_phase_names[p], 1e3 * (tr->state.phase[p] - v->phase_before[p]));
    fputc('\n', tr->report.out);
    return ND_OK;
}

const nd_observer_part nd_observer_profile = {.name = "profile", .wanted = wanted, .after_step = after_step};
