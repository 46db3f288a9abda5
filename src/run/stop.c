/* Stopping on a signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2): the caller's
 * handler only sets a flag; each rank marks it in the tail of the step's
 * gradient, which every exchange already sums over ranks, so the ranks learn
 * of any rank's signal at the same step without an extra message, finish
 * that step and stop together. Async mode carries it in its control
 * messages instead (async.c). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "nndist/checkpoint.h"
#include "train_internal.h"

const int nd_stop_signals[ND_STOP_SIGNALS] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
static const char *const stop_names[ND_STOP_SIGNALS] = {"SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"};

const char *const nd_run_status_names[] = {[ND_RUN_RUNNING] = "running",
                                           [ND_RUN_COMPLETED] = "completed",
                                           [ND_RUN_STOPPED_BY_SIGNAL] = "stopped-by-signal",
                                           [ND_RUN_EARLY_STOPPED] = "early-stopped",
                                           [ND_RUN_STOPPED_ON_NAN] = "stopped-on-nan",
                                           [ND_RUN_FAILED] = "failed",
                                           NULL};

static int slot_of(int sig) {
    for (int i = 0; i < ND_STOP_SIGNALS; ++i)
        if (nd_stop_signals[i] == sig) return i;
    return -1;
}

const char *nd_stop_signal_name(int sig) {
    const int i = slot_of(sig);
    return i >= 0 ? stop_names[i] : "a signal";
}

double nd_stop_fraction(const nd_trainer *tr) {
    const nd_train_state *s = &tr->state;
    if (!tr->async) return tr->steps_per_epoch > 0 ? (double)s->stop_epoch_step / (double)tr->steps_per_epoch : 0.0;
    return tr->info.train.rows > 0 ? (double)s->stop_epoch_step * tr->cfg.batch / (double)tr->info.train.rows : 0.0;
}

void nd_trainer_watch_stop(nd_trainer *tr, const volatile sig_atomic_t *signal_number) {
    tr->stop_request = signal_number;
}

void nd_stop_mark(const nd_trainer *tr, float *tail) {
    const int i = tr->stop_request ? slot_of((int)*tr->stop_request) : -1;
    if (i >= 0) tail[ND_TAIL_STOP + i] = 1.0f;
}

int nd_stop_agreed(const float *tail) {
    int best = -1;
    for (int i = 0; i < ND_STOP_SIGNALS; ++i)
        if (tail[ND_TAIL_STOP + i] > 0.0f && (best < 0 || tail[ND_TAIL_STOP + i] > tail[ND_TAIL_STOP + best])) best = i;
    return best >= 0 ? nd_stop_signals[best] : 0;
}

void nd_stop_record(nd_trainer *tr, int sig, int epoch, long epoch_step, double loss_sum, double correct) {
    nd_train_state *s = &tr->state;
    s->status = ND_RUN_STOPPED_BY_SIGNAL;
    s->stop_signal = sig;
    s->stop_epoch = epoch;
    s->stop_epoch_step = epoch_step;
    s->stop_loss_sum = loss_sum;
    s->stop_correct = correct;
    s->stop_step = s->step; /* async: updates still in flight are applied after it, not in the checkpoint */
    s->stop_checkpoint[0] = '\0';
    if (tr->cfg.checkpoint_dir[0])
        nd_checkpoint_name(s->stop_checkpoint, sizeof s->stop_checkpoint, tr->cfg.checkpoint_dir, s->step);
    snprintf(s->reason, sizeof s->reason, "%s at %s %ld (epoch %d, %.0f%% through)", nd_stop_signal_name(sig),
             tr->async ? "update" : "step", s->step, epoch, 100.0 * nd_stop_fraction(tr));
    nd_report_progress_end(&tr->report);
}

nd_status nd_train_stop(nd_trainer *tr, int sig, int epoch, long epoch_step, double loss_sum, double correct,
                        nd_error *err) {
    nd_stop_record(tr, sig, epoch, epoch_step, loss_sum, correct);
    /* The --checkpoint-every observer may have just written this step. */
    const long every = tr->cfg.checkpoint_every;
    if (tr->cfg.checkpoint_dir[0] && !(every > 0 && tr->state.step % every == 0))
        ND_TRY(nd_train_checkpoint_save(tr, epoch, epoch_step, loss_sum, correct, err));
    return ND_OK;
}
