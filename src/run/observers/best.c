/* The best epoch by the validation metric (the best-checkpoint copy
 * follows it) and --early-stop: keep its weights, stop after N epochs
 * without a better one. The same on every rank (the metric is reduced). */
#include <stdio.h>
#include <string.h>

#include "../train_internal.h"

static bool wanted(const nd_trainer *tr) { return tr->info.has_val; }

static nd_status after_epoch(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err) {
    (void)err;
    const int sense = nd_loss_metric_sense(tr->loss); /* RMSE and MAE: lower is better */
    if (tr->state.best_epoch == 0 || sense * e->val_acc > sense * tr->state.best_val) {
        tr->state.best_val = e->val_acc;
        tr->state.best_epoch = e->epoch;
        tr->state.epochs_without_gain = 0;
        if (tr->best_param) memcpy(tr->best_param, tr->model.param, sizeof(float) * tr->model.num_params);
        return ND_OK;
    }
    if (!tr->best_param || ++tr->state.epochs_without_gain < tr->cfg.early_stop) return ND_OK;
    if (tr->report.active)
        printf("early stop after epoch %d: validation %s has not improved for %d epochs (best %.4f at epoch %d)\n",
               e->epoch, nd_loss_metric_name(tr->loss), tr->state.epochs_without_gain, tr->state.best_val,
               tr->state.best_epoch);
    *stop = 1;
    return ND_OK;
}

const nd_observer_part nd_observer_best = {.name = "best", .wanted = wanted, .after_epoch = after_epoch};
