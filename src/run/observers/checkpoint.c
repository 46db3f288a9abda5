/* --checkpoint-dir: a checkpoint every --checkpoint-every steps and at each
 * epoch's end (with the best epoch's copy). Collective: rank 0 writes, every
 * rank agrees on the outcome. Checkpoint time is not training time. */
#include "../train_internal.h"

static bool wanted(const nd_trainer *tr) { return tr->cfg.checkpoint_dir[0] != '\0'; }

static nd_status after_step(nd_trainer *tr, const nd_step_view *v, nd_error *err) {
    const long every = tr->cfg.checkpoint_every;
    if (every <= 0 || tr->state.step % every != 0) return ND_OK;
    const double c0 = nd_comm_time();
    ND_TRY(nd_train_checkpoint_save(tr, v->epoch, v->done, v->loss_sum, v->correct, err));
    *v->paused += nd_comm_time() - c0;
    return ND_OK;
}

static nd_status after_epoch(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err) {
    (void)stop;
    return nd_train_checkpoint_epoch(tr, e, tr->state.best_epoch == e->epoch, err);
}

const nd_observer_part nd_observer_checkpoint = {.name = "checkpoint",
                                                 .wanted = wanted,
                                                 .after_step = after_step,
                                                 .after_epoch = after_epoch};
