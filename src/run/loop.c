/* The training loop of sync mode: each step the feed gives the rows, the
 * replica computes their gradient, the exchange sums it over ranks, the
 * guard checks it, the optimizer applies it, and the observers act (the
 * weight average, progress, checkpoints); after each epoch, evaluation and
 * the observers again (the epoch line, the best epoch and early stopping,
 * checkpoints, the plateau schedule). The exchange, the feed and the
 * observers are parts chosen at setup (exchange.h, feed.h, observer.h):
 * none is named here. Async and ssp runs go to their own driver (async.c);
 * --opt lbfgs runs its full-batch epochs (fullbatch.c) in this loop's place. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nndist/regularize.h"
#include "train_internal.h"

/* Collective: the gradient of step s of epoch (its micro-batches) summed
 * over ranks by the exchange, with its loss and hits in the tail; *scale
 * for the optimizer and *clip where the exchange applies the penalties
 * (else 1 and NaN norms). *bad = 1, with `what` (cap chars), when the guard
 * finds the step not finite: the same verdict on every rank. */
static nd_status gradient_step(nd_trainer *tr, int epoch, long s, nd_clock *clock, float *scale, nd_clip_figures *clip,
                               int *bad, char *what, size_t cap, nd_error *err) {
    nd_model *m = &tr->model;
    nd_exchange *x = &tr->exchange;
    const nd_exchange_part *xp = x->part;
    const nd_feed_part *feed = tr->feeder;
    const int micro = feed->micro_batches ? feed->micro_batches(tr) : 1;
    for (int k = 0; k < micro; ++k) {
        const nd_shard *rows;
        const int *idx;
        ND_TRY(feed->batch(tr, s, k, &rows, &idx, err)); /* waiting for a window counts as data time */
        nd_train_compute_gradient(tr, rows, idx, epoch, clock);
        if (m->pass_failed)
            return ND_FAIL(err, ND_ERR_COMM, "rank %d: --sync-bn: a batch-norm allreduce failed", tr->rank);
        if (xp->accumulate) {
            xp->accumulate(x->self, &x->env);
            nd_clock_tick(clock, ND_PHASE_COMM); /* the conversion is part of the exchange */
        }
    }
    ND_TRY(xp->reduce(x->self, &x->env, tr->state.step, clock, err));
    nd_clock_tick(clock, ND_PHASE_COMM);
    *scale = 1.0f;
    *clip = (nd_clip_figures){.before = NAN, .after = NAN};
    /* With a sliced gradient (ZeRO) the global norm is the guard's evidence. */
    if (xp->scale) ND_TRY(xp->scale(x->self, &x->env, tr->state.step, tr->global_batch, scale, clip, err));
    *bad = (xp->bad_step && xp->bad_step(x->self, what, cap)) ||
        nd_guard_find(m, xp->caps.sliced, clip->after, what, cap);
    return ND_OK;
}

/* Collective: applies the summed gradient at rate lr (batch-norm running
 * statistics, penalties and clipping, the optimizer, the exchange's
 * completion, max-norm). With e, the epoch's clip count; with last too (the
 * epoch's last step), the monitor's figures around it. want_norms: fill
 * *clip's norms (monitored steps only: a pass or two more). */
static nd_status apply_step(nd_trainer *tr, float scale, nd_clip_figures *clip, bool want_norms, float lr,
                            nd_epoch_stats *e, int last, nd_clock *clock, nd_error *err) {
    nd_model *m = &tr->model;
    nd_exchange *x = &tr->exchange;
    const nd_exchange_part *xp = x->part;
    const size_t n = m->num_params;
    /* A stated step (--sim-step-ms) has no figures to watch, and a few-step
     * simulated epoch would pay the watching as many times over. */
    const int monitor = e && last && !(tr->cfg.sim_step_ms > 0.0f);
    if (m->num_trainable < n) { /* batch norm: the global batch's statistics update every replica alike */
        nd_model_running_deltas(m, m->param, m->grad, tr->global_batch, tr->cfg.bn_momentum);
        nd_model_apply_running(m, m->param, m->grad, 0, n);
    }
    /* The data gradient's figures, before the penalties and clipping change it in place (sliced: no rank
     * holds it whole). */
    if (monitor) nd_monitor_gradient(m, m->grad, 1.0f / (float)tr->global_batch, 0, xp->caps.sliced ? 0 : n, e);
    if (!xp->scale) scale = nd_penalty_scale_all(&tr->penalty, m, tr->global_batch, want_norms || monitor, clip);
    if (e) e->clip_steps += clip->clipped, e->clip_of += 1;
    tr->opt.cfg.momentum = nd_momentum_at(tr->cfg.momentum, tr->cfg.momentum_final, tr->cfg.momentum_epochs,
                                          (double)tr->state.step / (double)tr->steps_per_epoch);
    if (monitor) nd_monitor_before(tr, e, clip->before, clip->after);
    const size_t lo = tr->slice.offset; /* everything, or this rank's slice (ZeRO) */
    nd_train_update(tr, m->param + lo, m->grad + lo, scale, lr);
    if (xp->after_update) ND_TRY(xp->after_update(x->self, &x->env, tr->state.step, clock, err));
    if (tr->cfg.max_norm > 0.0f)
        for (int t = 0; t < m->num_tensors; ++t) /* each unit's (or filter's) incoming weights; a frozen base stays */
            if (m->tensor[t].role == ND_TENSOR_WEIGHT && m->tensor[t].layer >= m->frozen_layers)
                nd_reg_max_norm(m->param + m->tensor[t].span.offset, m->tensor[t].dims[0],
                                (int)(m->tensor[t].span.length / (size_t)m->tensor[t].dims[0]), tr->cfg.max_norm);
    if (monitor) nd_monitor_after(tr, e, 0, n);
    return ND_OK;
}

/* Collective: one epoch of steps; fills loss/accuracy sums and seconds. */
static nd_status run_epoch(nd_trainer *tr, int epoch, nd_epoch_stats *e, nd_error *err) {
    nd_model *m = &tr->model;
    nd_exchange *x = &tr->exchange;
    const nd_exchange_part *xp = x->part;
    const nd_feed_part *feed = tr->feeder;
    const size_t n = m->num_params;
    const long steps = tr->steps_per_epoch;
    const int resuming = epoch == tr->state.start_epoch;
    const long first = resuming ? tr->state.start_epoch_step : 0;
    double loss_sum = resuming ? tr->state.start_loss_sum : 0.0, correct = resuming ? tr->state.start_correct : 0.0;
    ND_TRY(feed->begin_epoch(tr, epoch, first, err));
    nd_watchdog_enter(tr->watchdog, "the epoch's start barrier", tr->state.step);
    ND_TRY(nd_comm_barrier(tr->comm, err)); /* start the clock together, as the peer does */
    nd_watchdog_leave(tr->watchdog);
    double t0 = nd_comm_time(), paused = 0.0;
    memset(tr->state.phase, 0, sizeof tr->state.phase);
    long done = steps; /* steps of the epoch taken when it ends (fewer if a signal stopped it) */
    for (long s = first; s < steps; ++s) {
        double before[ND_PHASES];
        memcpy(before, tr->state.phase, sizeof before);
        nd_clock clock;
        nd_clock_start(&clock, tr->state.phase);
        const int last = s == steps - 1;
        /* Monitored steps (the epoch's last, every --log-every'th) compute norms; the others do not. */
        const int logged = tr->cfg.log_every > 0 && (tr->state.step + 1) % tr->cfg.log_every == 0;
        float scale;
        nd_clip_figures clip;
        int bad;
        char what[160];
        ND_TRY(gradient_step(tr, epoch, s, &clock, &scale, &clip, &bad, what, sizeof what, err));
        if (bad) {
            ND_TRY(nd_guard_bad_step(tr, what, err)); /* stops, or: */
            e->nan_skips += 1;                        /* dropped; its batch is used up */
            tr->state.step += 1;
            nd_clock_tick(&clock, ND_PHASE_UPDATE);
            continue;
        }
        tr->state.nan_consecutive = 0;
        const int stop_signal = nd_stop_agreed(m->grad + n); /* the same on every rank */
        const double step_loss = m->grad[n + ND_TAIL_LOSS];
        loss_sum += step_loss;
        correct += m->grad[n + ND_TAIL_CORRECT];
        ND_TRY(apply_step(tr, scale, &clip, logged, nd_lr_at(&tr->lr, tr->state.step), e, last, &clock, err));
        tr->state.step += 1;
        nd_clock_tick(&clock, ND_PHASE_UPDATE);
        const nd_step_view view = {.epoch = epoch,
                                   .done = s + 1,
                                   .steps = steps,
                                   .first = first,
                                   .loss_sum = loss_sum,
                                   .correct = correct,
                                   .phase_before = before,
                                   .epoch_start = t0,
                                   .paused = &paused,
                                   .step_loss = step_loss / tr->global_batch,
                                   .grad_norm = logged ? clip.before : NAN};
        for (int o = 0; o < tr->num_observers; ++o)
            if (tr->observers[o]->after_step) ND_TRY(tr->observers[o]->after_step(tr, &view, err));
        if (stop_signal) {
            /* Every rank stops after this same step; nd_train_stop records it after the epoch's time. */
            tr->state.stop_signal = stop_signal;
            done = s + 1;
            break;
        }
    }
    double seconds = nd_comm_time() - t0 - paused;
    if (xp->messages) tr->state.gradient_buckets = xp->messages(x->self);
    nd_report_progress_end(&tr->report);
    nd_watchdog_enter(tr->watchdog, "the epoch's time reduction", tr->state.step);
    ND_TRY(nd_comm_allreduce_max_f64(tr->comm, &seconds, 1, err)); /* the slowest rank sets the pace */
    nd_watchdog_leave(tr->watchdog);
    if (tr->state.stop_signal) {
        tr->state.stop_loss_sum = loss_sum;
        tr->state.stop_correct = correct;
        tr->state.stop_epoch_step = done;
    }
    const double samples = (double)done * tr->global_batch, run = (double)(done - first) * tr->global_batch;
    e->epoch = epoch;
    e->train_loss = loss_sum / samples;
    e->train_acc = nd_loss_metric(tr->loss, correct, samples, tr->info.num_outputs);
    e->seconds = seconds;
    e->samples_per_s = run / seconds;
    for (int p = 0; p < ND_PHASES; ++p)
        e->phase[p] = tr->state.phase[p], tr->state.phase_total[p] += tr->state.phase[p];
    e->lr = nd_lr_at(&tr->lr, tr->state.step > 0 ? tr->state.step - 1 : 0);
    tr->state.train_seconds += seconds;
    tr->state.samples_seen += (long)run;
    return ND_OK;
}

nd_status nd_trainer_step(nd_trainer *tr, float lr, double *loss, nd_error *err) {
    if (tr->async)
        return ND_FAIL(err, ND_ERR_ARG, "a single training step is sync mode's, not --mode %s",
                       nd_mode_names[tr->cfg.mode]);
    if (tr->lbfgs) return ND_FAIL(err, ND_ERR_ARG, "a single training step is a minibatch's, not --opt lbfgs's");
    const long s = tr->state.step % tr->steps_per_epoch;
    const int epoch = (int)(tr->state.step / tr->steps_per_epoch) + 1;
    if (s == 0) ND_TRY(tr->feeder->begin_epoch(tr, epoch, 0, err)); /* the epoch's order, as fit would */
    nd_clock clock;
    nd_clock_start(&clock, tr->state.phase);
    float scale;
    nd_clip_figures clip;
    int bad;
    char what[160];
    ND_TRY(gradient_step(tr, epoch, s, &clock, &scale, &clip, &bad, what, sizeof what, err));
    const size_t n = tr->model.num_params;
    *loss = bad ? NAN : (double)tr->model.grad[n + ND_TAIL_LOSS] / tr->global_batch;
    if (!bad) {
        nd_lr_schedule at = tr->lr; /* lr scaled to the global batch as --lr is */
        at.base_lr = lr;
        ND_TRY(apply_step(tr, scale, &clip, false, nd_lr_peak(&at), NULL, 0, &clock, err));
        tr->state.samples_seen += tr->global_batch;
    }
    tr->state.step += 1;
    nd_clock_tick(&clock, ND_PHASE_UPDATE);
    return ND_OK;
}

nd_status nd_trainer_fit(nd_trainer *tr, nd_error *err) {
    if (tr->async) return nd_async_fit(tr, err);
    for (int epoch = tr->state.start_epoch; epoch <= tr->cfg.epochs; ++epoch) {
        nd_epoch_stats e = {0};
        e.test_loss = e.test_acc = e.val_loss = e.val_acc = e.train_eval_loss = e.train_eval_acc = NAN;
        ND_TRY(tr->lbfgs ? nd_lbfgs_epoch(tr, epoch, &e, err) : run_epoch(tr, epoch, &e, err));
        if (tr->state.stop_signal) /* an unfinished epoch: no evaluation, no epoch line */
            return nd_train_stop(tr, tr->state.stop_signal, epoch, tr->state.stop_epoch_step, tr->state.stop_loss_sum,
                                 tr->state.stop_correct, err);
        if (tr->info.has_val) ND_TRY(nd_trainer_evaluate(tr, &tr->val, &e.val_loss, &e.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &e.test_loss, &e.test_acc, err));
        if (tr->train_eval_rows > 0) /* the gap's train side, measured like /val */
            ND_TRY(nd_trainer_evaluate(tr, &tr->train_eval, &e.train_eval_loss, &e.train_eval_acc, err));
        e.ema_test_acc = e.ema_val_acc = NAN;
        int stop = 0;
        for (int o = 0; o < tr->num_observers; ++o)
            if (tr->observers[o]->after_epoch) ND_TRY(tr->observers[o]->after_epoch(tr, &e, &stop, err));
        tr->state.last = e;
        if (stop) {
            tr->state.status = ND_RUN_EARLY_STOPPED;
            snprintf(tr->state.reason, sizeof tr->state.reason, "--early-stop %d after epoch %d", tr->cfg.early_stop,
                     e.epoch);
            break;
        }
    }
    if (tr->best_param && tr->state.best_epoch > 0 && tr->state.best_epoch != tr->state.last.epoch) {
        /* End with the best weights: the final evaluation and summary are theirs. */
        memcpy(tr->model.param, tr->best_param, sizeof(float) * tr->model.num_params);
        ND_TRY(nd_trainer_evaluate(tr, &tr->val, &tr->state.last.val_loss, &tr->state.last.val_acc, err));
        if (tr->info.has_test)
            ND_TRY(nd_trainer_evaluate(tr, &tr->test, &tr->state.last.test_loss, &tr->state.last.test_acc, err));
        if (tr->train_eval_rows > 0)
            ND_TRY(nd_trainer_evaluate(tr, &tr->train_eval, &tr->state.last.train_eval_loss,
                                       &tr->state.last.train_eval_acc, err));
        if (tr->report.active)
            printf("early stop: restored the weights of epoch %d (val %s %.4f)\n", tr->state.best_epoch,
                   nd_loss_metric_name(tr->loss), tr->state.last.val_acc);
    }
    if (tr->state.start_epoch > tr->cfg.epochs) {
        /* Resumed from the end of a finished run: report what it holds. */
        tr->state.last.epoch = tr->cfg.epochs;
        tr->state.last.test_loss = tr->state.last.test_acc = tr->state.last.val_loss = tr->state.last.val_acc = NAN;
        tr->state.last.train_eval_loss = tr->state.last.train_eval_acc = NAN;
        if (tr->train_eval_rows > 0)
            ND_TRY(nd_trainer_evaluate(tr, &tr->train_eval, &tr->state.last.train_eval_loss,
                                       &tr->state.last.train_eval_acc, err));
        if (tr->info.has_val)
            ND_TRY(nd_trainer_evaluate(tr, &tr->val, &tr->state.last.val_loss, &tr->state.last.val_acc, err));
        if (tr->info.has_test)
            ND_TRY(nd_trainer_evaluate(tr, &tr->test, &tr->state.last.test_loss, &tr->state.last.test_acc, err));
    }
    for (int o = 0; o < tr->num_observers; ++o)
        if (tr->observers[o]->at_end) ND_TRY(tr->observers[o]->at_end(tr, err));
    if (tr->state.status == ND_RUN_RUNNING) tr->state.status = ND_RUN_COMPLETED;
    nd_train_print_done(tr);
    return ND_OK;
}
