/* --lr-schedule plateau: the rate is multiplied by --lr-gamma after
 * --plateau-patience epochs without a better validation metric. */
#include "../train_internal.h"

static bool wanted(const nd_trainer *tr) { return tr->lr.kind == ND_SCHED_PLATEAU; }

static nd_status after_epoch(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err) {
    (void)stop, (void)err;
    nd_lr_plateau_update(&tr->lr, nd_loss_metric_sense(tr->loss) * e->val_acc, &tr->state.plateau_best,
                         &tr->state.plateau_bad, tr->cfg.plateau_patience);
    return ND_OK;
}

const nd_observer_part nd_observer_plateau = {.name = "plateau", .wanted = wanted, .after_epoch = after_epoch};
