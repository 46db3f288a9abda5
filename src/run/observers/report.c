/* Rank 0's view of a run as it goes: the progress within an epoch and the
 * epoch line with its --metrics JSON line. */
#include "../train_internal.h"

static bool wanted(const nd_trainer *tr) { return tr->report.active; }

static nd_status after_step(nd_trainer *tr, const nd_step_view *v, nd_error *err) {
    (void)err;
    const double now = nd_comm_time(), el = now - v->epoch_start - *v->paused;
    const double done = (double)v->done * tr->global_batch;
    nd_report_progress(&tr->report, now, v->epoch, tr->cfg.epochs, v->done, v->steps, v->loss_sum / done, done / el,
                       el / (double)(v->done - v->first) * (double)(v->steps - v->done));
    if (tr->cfg.log_every > 0 && tr->state.step % tr->cfg.log_every == 0)
        nd_train_print_step(tr, v->epoch, tr->state.step, v->step_loss, nd_lr_at(&tr->lr, tr->state.step - 1),
                            v->grad_norm);
    return ND_OK;
}

static nd_status after_epoch(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err) {
    (void)stop, (void)err;
    nd_train_print_epoch(tr, e);
    return ND_OK;
}

const nd_observer_part nd_observer_report = {.name = "report",
                                             .wanted = wanted,
                                             .after_step = after_step,
                                             .after_epoch = after_epoch};
