/* --opt lbfgs: the full-batch driver beside the minibatch loop. Each
 * evaluation of the objective is a forward and backward pass over this
 * rank's whole training shard, in chunks of --eval-batch rows, then one
 * allreduce of the gradient with the loss in its tail: every rank holds the
 * same full-batch loss and gradient, so the core (src/core/lbfgs.c) takes
 * the same step on every rank, whatever their number (up to the order of
 * summation). The objective is the mean loss over the training split plus
 * 0.5 * wd * |w|^2, through the penalty path the minibatch loop uses. An
 * epoch is one L-BFGS step: up to --lbfgs-max-iter iterations (PyTorch's
 * LBFGS.step with that max_iter). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

typedef struct {
    nd_trainer *tr;
    int signal; /* a stop signal every rank agreed on (0: none) */
} fullbatch;

/* Collective: the objective and its gradient at the model's weights (param
 * is tr->model.param). */
static nd_status evaluate(void *ctx, const float *param, float *grad, double *loss, nd_error *err) {
    fullbatch *fb = ctx;
    nd_trainer *tr = fb->tr;
    nd_model *m = &tr->model;
    (void)param;
    const size_t n = m->num_params;
    const nd_shard *sh = &tr->train;
    const int chunk = tr->cfg.eval_batch < m->max_batch ? tr->cfg.eval_batch : m->max_batch;
    const int cols = tr->info.train.cols, k = tr->info.num_outputs;
    nd_model_zero_grad(m);
    const nd_train_pass pass = {.seed = tr->cfg.seed, .step = tr->state.step}; /* no dropout: masks unused */
    double loss_sum = 0.0, correct = 0.0;
    for (int off = 0; off < sh->rows; off += chunk) {
        const int nb = sh->rows - off < chunk ? sh->rows - off : chunk;
        const float *x = sh->x + (size_t)off * cols;
        const float *out = nd_model_forward(m, x, nb, &pass);
        const nd_loss_stats ls = nd_loss_apply(tr->loss, nd_model_output_grad(m), out, sh->y ? sh->y + off : NULL,
                                               sh->t ? sh->t + (size_t)off * k : NULL, nb, k);
        loss_sum += ls.loss_sum;
        correct += ls.correct;
        nd_model_backward(m, x, nb); /* adds onto the chunks before */
    }
    float *tail = m->grad + n;
    tail[ND_TAIL_LOSS] = (float)loss_sum;
    tail[ND_TAIL_CORRECT] = (float)correct;
    nd_stop_mark(tr, tail);
    nd_watchdog_enter(tr->watchdog, "an L-BFGS evaluation's allreduce", tr->state.step);
    ND_TRY(nd_comm_allreduce_sum_f32(tr->comm, m->grad, n + ND_TAIL_USED, err));
    nd_watchdog_leave(tr->watchdog);
    if (!fb->signal) fb->signal = nd_stop_agreed(tail);
    char what[160];
    if (nd_guard_find(m, 0, NAN, what, sizeof what)) return nd_guard_bad_step(tr, what, err);
    const long rows = tr->info.train.rows;
    const float scale = nd_penalty_apply(&tr->penalty, m, (int)rows, 0, n, NULL, NULL); /* + wd * rows * w */
    for (size_t i = 0; i < n; ++i) grad[i] = m->grad[i] * scale;
    double penalty = 0.0;
    if (tr->penalty.weight_decay > 0.0f)
        for (int t = 0; t < m->num_tensors; ++t)
            if (nd_penalty_covers(&tr->penalty, &m->tensor[t]))
                for (size_t i = 0; i < m->tensor[t].span.length; ++i) {
                    const double w = m->param[m->tensor[t].span.offset + i];
                    penalty += w * w;
                }
    *loss = (double)tail[ND_TAIL_LOSS] / (double)rows + 0.5 * tr->penalty.weight_decay * penalty;
    tr->state.samples_seen += rows;
    return ND_OK;
}

static int stop_agreed(void *ctx) { return ((const fullbatch *)ctx)->signal != 0; }

nd_status nd_lbfgs_epoch(nd_trainer *tr, int epoch, nd_epoch_stats *e, nd_error *err) {
    nd_watchdog_enter(tr->watchdog, "the epoch's start barrier", tr->state.step);
    ND_TRY(nd_comm_barrier(tr->comm, err));
    nd_watchdog_leave(tr->watchdog);
    const double t0 = nd_comm_time();
    const long seen = tr->state.samples_seen;
    fullbatch fb = {.tr = tr};
    nd_lbfgs_report r;
    ND_TRY(nd_lbfgs_step(tr->lbfgs, tr->model.param, evaluate, stop_agreed, &fb, &r, err));
    tr->state.step += r.iterations;
    double seconds = nd_comm_time() - t0;
    nd_watchdog_enter(tr->watchdog, "the epoch's time reduction", tr->state.step);
    ND_TRY(nd_comm_allreduce_max_f64(tr->comm, &seconds, 1, err));
    nd_watchdog_leave(tr->watchdog);
    if (fb.signal) { /* stopped after the iteration where the ranks agreed on it */
        tr->state.stop_signal = fb.signal;
        tr->state.stop_epoch_step = r.iterations;
        tr->state.stop_loss_sum = tr->state.stop_correct = 0.0;
    }
    tr->state.train_seconds += seconds;
    e->epoch = epoch;
    e->seconds = seconds;
    e->samples_per_s = (double)(tr->state.samples_seen - seen) / seconds;
    e->lr = tr->cfg.lr;
    if (fb.signal) return ND_OK;
    /* The epoch's figures at its final weights (the last evaluation may
     * have been a rejected trial point). */
    ND_TRY(nd_trainer_evaluate(tr, &tr->train, &e->train_loss, &e->train_acc, err));
    if (tr->report.active && !tr->report.quiet)
        fprintf(tr->report.out,
                "lbfgs epoch %d: %d iterations, %d evaluations, objective %.9g -> %.9g, last step %.4g (%s)\n", epoch,
                r.iterations, r.evaluations, r.loss_start, r.loss, r.step, nd_lbfgs_end_names[r.end]);
    return ND_OK;
}

nd_status nd_lbfgs_create_for(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    nd_lbfgs_config lc = nd_lbfgs_defaults();
    lc.lr = c->lr;
    lc.max_iter = c->lbfgs_max_iter;
    lc.max_eval = c->lbfgs_max_eval;
    lc.history = c->lbfgs_history;
    lc.tolerance_grad = c->lbfgs_tolerance_grad;
    lc.tolerance_change = c->lbfgs_tolerance_change;
    lc.line_search = c->lbfgs_line_search;
    if (tr->info.train.rows > INT_MAX)
        return ND_FAIL(err, ND_ERR_ARG, "--opt lbfgs: %ld training rows, more than %d", tr->info.train.rows, INT_MAX);
    if (!(tr->lbfgs = calloc(1, sizeof *tr->lbfgs)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--opt lbfgs: cannot allocate its state");
    return nd_lbfgs_create(tr->lbfgs, &lc, tr->model.num_params, err);
}

void nd_lbfgs_free(nd_trainer *tr) {
    if (!tr->lbfgs) return;
    nd_lbfgs_destroy(tr->lbfgs);
    free(tr->lbfgs);
    tr->lbfgs = NULL;
}
