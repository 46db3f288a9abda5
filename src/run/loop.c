/* The training loop of sync mode: each step the feed gives the rows, the
 * replica computes their gradient, the exchange sums it over ranks, the
 * guard checks it, the optimizer applies it; after each epoch evaluation,
 * reporting, checkpoints and early stopping. The exchange and the feed are
 * parts chosen at setup (exchange.h, feed.h): none is named here. Async and
 * ssp runs go to their own driver (async.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nndist/regularize.h"
#include "train_internal.h"

/* Collective: one epoch of steps; fills loss/accuracy sums and seconds.
 * The feed gives each step's micro-batches, the exchange sums their
 * gradients over ranks; neither is named here. */
static nd_status run_epoch(nd_trainer *tr, int epoch, nd_epoch_stats *e, nd_error *err) {
    nd_model *m = &tr->model;
    nd_exchange *x = &tr->exchange;
    const nd_exchange_part *xp = x->part;
    const nd_feed_part *feed = tr->feeder;
    const size_t n = m->num_params;
    const long steps = tr->steps_per_epoch;
    const int resuming = epoch == tr->start_epoch;
    const long first = resuming ? tr->start_epoch_step : 0;
    double loss_sum = resuming ? tr->start_loss_sum : 0.0, correct = resuming ? tr->start_correct : 0.0;
    const long every = tr->cfg.checkpoint_every;
    ND_TRY(feed->begin_epoch(tr, epoch, first, err));
    nd_watchdog_enter(tr->watchdog, "the epoch's start barrier", tr->step);
    ND_TRY(nd_comm_barrier(tr->comm, err)); /* start the clock together, as the peer does */
    nd_watchdog_leave(tr->watchdog);
    double t0 = nd_comm_time(), paused = 0.0;
    memset(tr->phase, 0, sizeof tr->phase);
    const int micro = feed->micro_batches(tr);
    for (long s = first; s < steps; ++s) {
        double before[ND_PHASES];
        memcpy(before, tr->phase, sizeof before);
        nd_clock clock;
        nd_clock_start(&clock, tr->phase);
        for (int k = 0; k < micro; ++k) {
            const nd_shard *rows;
            const int *idx;
            ND_TRY(feed->batch(tr, s, k, &rows, &idx, err)); /* waiting for a window counts as data time */
            nd_train_compute_gradient(tr, rows, idx, &clock);
            if (m->pass_failed)
                return ND_FAIL(err, ND_ERR_COMM, "rank %d: --sync-bn: a batch-norm allreduce failed", tr->rank);
            if (xp->accumulate) {
                xp->accumulate(x->self, &x->env);
                nd_clock_tick(&clock, ND_PHASE_COMM); /* the conversion is part of the exchange */
            }
        }
        ND_TRY(xp->reduce(x->self, &x->env, tr->step, &clock, err));
        nd_clock_tick(&clock, ND_PHASE_COMM);
        const int last = s == steps - 1;
        float scale = 1.0f;
        double grad_norm = NAN;
        /* With a sliced gradient (ZeRO) the global norm is the guard's evidence. */
        if (xp->scale) ND_TRY(xp->scale(x->self, &x->env, tr->step, tr->global_batch, last, &scale, &grad_norm, err));
        char what[160];
        if ((xp->bad_step && xp->bad_step(x->self, what, sizeof what)) ||
            nd_guard_find(tr, grad_norm, what, sizeof what)) {
            ND_TRY(nd_guard_bad_step(tr, what, err)); /* stops, or: */
            e->nan_skips += 1;                        /* dropped; its batch is used up */
            tr->step += 1;
            nd_clock_tick(&clock, ND_PHASE_UPDATE);
            continue;
        }
        tr->nan_consecutive = 0;
        if (m->num_trainable < n) { /* batch norm: the global batch's statistics update every replica alike */
            nd_model_running_deltas(m, m->param, m->grad, tr->global_batch, tr->cfg.bn_momentum);
            nd_model_apply_running(m, m->param, m->grad, 0, n);
        }
        loss_sum += m->grad[n + ND_TAIL_LOSS];
        correct += m->grad[n + ND_TAIL_CORRECT];
        if (!xp->scale) scale = nd_penalty_scale_all(&tr->penalty, m, tr->global_batch, last ? &grad_norm : NULL);
        tr->opt.cfg.momentum = nd_momentum_at(tr->cfg.momentum, tr->cfg.momentum_final, tr->cfg.momentum_epochs,
                                              (double)tr->step / (double)tr->steps_per_epoch);
        if (last) nd_monitor_before(tr, e, grad_norm);
        const size_t lo = tr->slice.offset; /* everything, or this rank's slice (ZeRO) */
        nd_optimizer_step(&tr->opt, m->param + lo, m->grad + lo, scale, nd_lr_at(&tr->lr, tr->step));
        if (xp->after_update) ND_TRY(xp->after_update(x->self, &x->env, tr->step, &clock, err));
        if (tr->cfg.max_norm > 0.0f)
            for (int l = 0; l < m->num_layers; ++l)
                nd_reg_max_norm(m->param + m->layer[l].w.offset, m->layer[l].out_dim, m->layer[l].in_dim,
                                tr->cfg.max_norm);
        if (last) nd_monitor_after(tr, e);
        tr->step += 1;
        if (tr->ema) {
            const float d = tr->cfg.ema, keep = 1.0f - d;
            float *restrict a = tr->ema;
            const float *restrict p = m->param;
            for (size_t i = 0; i < n; ++i) a[i] = d * a[i] + keep * p[i];
        }
        nd_clock_tick(&clock, ND_PHASE_UPDATE);
        if (tr->step <= tr->cfg.profile && tr->report.active) { /* the run's first N steps */
            fprintf(tr->report.out, "profile step %ld:", tr->step);
            for (int p = 0; p < ND_PHASES; ++p)
                fprintf(tr->report.out, " %s %.3f ms", nd_phase_names[p], 1e3 * (tr->phase[p] - before[p]));
            fputc('\n', tr->report.out);
        }
        if (every > 0 && tr->cfg.checkpoint_dir[0] && tr->step % every == 0) {
            const double c0 = nd_comm_time();
            ND_TRY(nd_train_checkpoint_save(tr, epoch, s + 1, loss_sum, correct, err));
            paused += nd_comm_time() - c0; /* checkpoint time is not training time */
        }
        if (tr->report.active) {
            const double now = nd_comm_time(), el = now - t0 - paused;
            const double done = (double)(s + 1) * tr->global_batch;
            nd_report_progress(&tr->report, now, epoch, tr->cfg.epochs, s + 1, steps, loss_sum / done, done / el,
                               el / (s + 1 - first) * (steps - s - 1));
        }
    }
    double seconds = nd_comm_time() - t0 - paused;
    if (xp->messages) tr->gradient_buckets = xp->messages(x->self);
    nd_report_progress_end(&tr->report);
    nd_watchdog_enter(tr->watchdog, "the epoch's time reduction", tr->step);
    ND_TRY(nd_comm_allreduce_max_f64(tr->comm, &seconds, 1, err)); /* the slowest rank sets the pace */
    nd_watchdog_leave(tr->watchdog);
    const double samples = (double)steps * tr->global_batch, run = (double)(steps - first) * tr->global_batch;
    e->epoch = epoch;
    e->train_loss = loss_sum / samples;
    e->train_acc = nd_loss_metric(tr->loss, correct, samples, tr->info.num_outputs);
    e->seconds = seconds;
    e->samples_per_s = run / seconds;
    for (int p = 0; p < ND_PHASES; ++p) e->phase[p] = tr->phase[p], tr->phase_total[p] += tr->phase[p];
    e->lr = nd_lr_at(&tr->lr, tr->step > 0 ? tr->step - 1 : 0);
    tr->train_seconds += seconds;
    tr->samples_seen += (long)run;
    return ND_OK;
}

/* Collective: test and validation accuracy of the averaged weights (the
 * model's parameter pointer is swapped, nothing is copied). */
static nd_status evaluate_average(nd_trainer *tr, nd_epoch_stats *e, nd_error *err) {
    float *raw = tr->model.param;
    double loss;
    nd_status st = ND_OK;
    tr->model.param = tr->ema;
    if (tr->info.has_val) st = nd_trainer_evaluate(tr, &tr->val, &loss, &e->ema_val_acc, err);
    if (st == ND_OK && tr->info.has_test) st = nd_trainer_evaluate(tr, &tr->test, &loss, &e->ema_test_acc, err);
    tr->model.param = raw;
    return st;
}

/* Same on every rank (validation accuracy is reduced). Records whether
 * this epoch has the best validation accuracy so far (the best-checkpoint
 * copy and early stopping both follow it), keeps its weights for
 * --early-stop, and says whether patience ran out. */
static int note_validation(nd_trainer *tr, const nd_epoch_stats *e, int *improved) {
    const int sense = nd_loss_metric_sense(tr->loss); /* RMSE and MAE: lower is better */
    *improved = tr->info.has_val && (tr->best_epoch == 0 || sense * e->val_acc > sense * tr->best_val);
    if (*improved) {
        tr->best_val = e->val_acc;
        tr->best_epoch = e->epoch;
        tr->epochs_without_gain = 0;
        if (tr->best_param) memcpy(tr->best_param, tr->model.param, sizeof(float) * tr->model.num_params);
        return 0;
    }
    if (!tr->best_param || ++tr->epochs_without_gain < tr->cfg.early_stop) return 0;
    if (tr->report.active)
        printf("early stop after epoch %d: validation %s has not improved for %d epochs (best %.4f at epoch %d)\n",
               e->epoch, nd_loss_metric_name(tr->loss), tr->epochs_without_gain, tr->best_val, tr->best_epoch);
    return 1;
}

nd_status nd_trainer_fit(nd_trainer *tr, nd_error *err) {
    if (tr->async) return nd_async_fit(tr, err);
    for (int epoch = tr->start_epoch; epoch <= tr->cfg.epochs; ++epoch) {
        nd_epoch_stats e = {0};
        e.test_loss = e.test_acc = e.val_loss = e.val_acc = NAN;
        ND_TRY(run_epoch(tr, epoch, &e, err));
        if (tr->info.has_val) ND_TRY(nd_trainer_evaluate(tr, &tr->val, &e.val_loss, &e.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &e.test_loss, &e.test_acc, err));
        e.ema_test_acc = e.ema_val_acc = NAN;
        if (tr->ema) ND_TRY(evaluate_average(tr, &e, err));
        tr->last = e;
        nd_train_print_epoch(tr, &e);
        int improved;
        const int stop = note_validation(tr, &e, &improved);
        if (tr->cfg.checkpoint_dir[0]) ND_TRY(nd_train_checkpoint_epoch(tr, &e, improved, err));
        if (tr->lr.kind == ND_SCHED_PLATEAU)
            nd_lr_plateau_update(&tr->lr, nd_loss_metric_sense(tr->loss) * e.val_acc, &tr->plateau_best,
                                 &tr->plateau_bad, tr->cfg.plateau_patience);
        if (stop) break;
    }
    if (tr->best_param && tr->best_epoch > 0 && tr->best_epoch != tr->last.epoch) {
        /* End with the best weights: the final evaluation and summary are theirs. */
        memcpy(tr->model.param, tr->best_param, sizeof(float) * tr->model.num_params);
        ND_TRY(nd_trainer_evaluate(tr, &tr->val, &tr->last.val_loss, &tr->last.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &tr->last.test_loss, &tr->last.test_acc, err));
        if (tr->report.active)
            printf("early stop: restored the weights of epoch %d (val %s %.4f)\n", tr->best_epoch,
                   nd_loss_metric_name(tr->loss), tr->last.val_acc);
    }
    if (tr->start_epoch > tr->cfg.epochs) {
        /* Resumed from the end of a finished run: report what it holds. */
        tr->last.epoch = tr->cfg.epochs;
        tr->last.test_loss = tr->last.test_acc = tr->last.val_loss = tr->last.val_acc = NAN;
        if (tr->info.has_val) ND_TRY(nd_trainer_evaluate(tr, &tr->val, &tr->last.val_loss, &tr->last.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &tr->last.test_loss, &tr->last.test_acc, err));
    }
    nd_train_print_done(tr);
    return ND_OK;
}
