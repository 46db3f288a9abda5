/* A replica's gradient of one batch (forward, loss, backward, with the
 * exchange's hooks in the pass) and its loss over a split. Shared by the
 * sync loop and the parameter-server workers. */
#include <math.h>
#include <signal.h>
#include <string.h>

#include "nndist/loss.h"
#include "nndist/rng.h"
#include "train_internal.h"

/* --sync-bn's hook: the model adds batch-norm sums across ranks through it,
 * in the middle of forward and backward: a rank frozen there would hold the
 * others inside it, so the watchdog times it. */
static int reduce_over_ranks(void *ctx, float *buf, size_t n) {
    nd_trainer *tr = ctx;
    nd_error ignored = {0};
    nd_watchdog_enter(tr->watchdog, "a --sync-bn batch-norm allreduce", tr->state.step + 1);
    const nd_status st = nd_comm_allreduce_sum_f32(tr->comm, buf, n, &ignored);
    nd_watchdog_leave(tr->watchdog);
    return st == ND_OK ? 0 : -1;
}

/* --teacher: the teachers' mean softened probabilities of the batch
 * (augmented as the student sees it) into tr->soft, by inference passes. */
static void teach(nd_trainer *tr, int b) {
    const int cols = tr->train.cols, k = tr->info.num_outputs;
    memset(tr->soft, 0, sizeof(float) * (size_t)b * k);
    for (int t = 0; t < tr->num_teachers; ++t) {
        const nd_teacher *T = &tr->teachers[t];
        const float *x = tr->xb;
        if (T->scale) {
            for (int i = 0; i < b; ++i)
                for (int j = 0; j < cols; ++j) {
                    const size_t at = (size_t)i * cols + j;
                    tr->teacher_x[at] = tr->xb[at] * T->scale[j] + T->shift[j];
                }
            x = tr->teacher_x;
        }
        const float *logits = nd_model_forward(&tr->teachers[t].model, x, b, NULL);
        nd_softmax_temperature_add(tr->soft, logits, tr->cfg.distill_t, 1.0f / (float)tr->num_teachers, b, k);
    }
}

/* Forward and loss of the batch in tr->xb: the loss sum and correct count
 * go to the gradient's tail. */
static void forward_loss(nd_trainer *tr, nd_train_pass *pass) {
    nd_model *m = &tr->model;
    const int b = tr->cfg.batch, k = tr->info.num_outputs;
    if (tr->num_teachers) teach(tr, b);
    const float *out = nd_model_forward(m, tr->xb, b, pass);
    nd_loss_stats ls = tr->num_teachers ? nd_loss_apply_distill(nd_model_output_grad(m), out, tr->yb, tr->soft,
                                                                tr->cfg.distill_t, tr->cfg.distill_alpha, b, k)
        : tr->mixup_lam && tr->yb
        ? nd_loss_apply_mixup(tr->loss, nd_model_output_grad(m), out, tr->yb, tr->mixup_lam, b, k)
        : nd_loss_apply(tr->loss, nd_model_output_grad(m), out, tr->yb, tr->tb, b, k);
    m->grad[m->num_params + ND_TAIL_LOSS] = (float)ls.loss_sum;
    m->grad[m->num_params + ND_TAIL_CORRECT] = (float)ls.correct;
}

typedef struct {
    nd_trainer *tr;
    nd_train_pass *pass;
} sampled_step;

/* --sim-sample's unit: forward, loss and backward (no exchange hooks). */
static void forward_backward(void *ctx) {
    sampled_step *s = ctx;
    forward_loss(s->tr, s->pass);
    nd_model_backward(&s->tr->model, s->tr->xb, s->tr->cfg.batch);
}

/* --sim-step-ms: the step's time, stated; nothing computed. The running
 * statistics' sums and the tail start from zero as a real pass's do (the
 * gradient itself stays what the last exchange left: time only). */
static void stated_step(nd_trainer *tr, nd_clock *clock) {
    nd_model *m = &tr->model;
    memset(m->grad + m->num_trainable, 0, sizeof(float) * (m->num_params - m->num_trainable + ND_GRAD_TAIL));
    double ms = tr->cfg.sim_step_ms;
    if (tr->cfg.sim_step_cv > 0.0f) { /* lognormal, mean ms: a pure function of (seed, rank, step) */
        nd_rng rng;
        nd_rng_seed(&rng, tr->cfg.seed, 0x51e7u << 20 | (uint64_t)tr->rank, (uint64_t)tr->state.step);
        const double s2 = log(1.0 + (double)tr->cfg.sim_step_cv * tr->cfg.sim_step_cv);
        ms *= exp(sqrt(s2) * nd_rng_normal(&rng) - 0.5 * s2);
    }
    nd_comm_sim_compute(1e-3 * ms);
    nd_stop_mark(tr, m->grad + m->num_params);
    nd_clock_tick(clock, ND_PHASE_BACKWARD);
}

void nd_train_update(nd_trainer *tr, float *param, const float *grad, float scale, float lr) {
    if (tr->cfg.sim_update_ms > 0.0f) /* its share of the stated time of a whole update */
        nd_comm_sim_compute(1e-3 * tr->cfg.sim_update_ms * (double)tr->slice.length / (double)tr->model.num_params);
    else nd_optimizer_step(&tr->opt, param, grad, scale, lr);
}

void nd_train_compute_gradient(nd_trainer *tr, const nd_shard *src, const int *idx, int epoch, nd_clock *clock) {
    nd_model *m = &tr->model;
    nd_exchange *x = &tr->exchange;
    const int b = tr->cfg.batch;
    if (tr->cfg.sim_step_ms > 0.0f) {
        stated_step(tr, clock);
        return;
    }
    nd_feed_gather(tr, src, idx, epoch);
    /* Zeroed first: a training forward leaves batch-norm sums in the gradient. */
    nd_model_zero_grad(m);
    nd_clock_tick(clock, ND_PHASE_DATA);
    nd_train_pass pass = {.seed = tr->cfg.seed,
                          .step = tr->state.step,
                          .row_ids = tr->row_ids,
                          .reduce = tr->cfg.sync_bn ? reduce_over_ranks : NULL,
                          .reduce_ctx = tr};
    /* Under SimGrid, --sim-sample replays the measured time of forward and
     * backward as one (counted as backward); an exchange with hooks inside
     * the pass always computes. */
    const int sampled = tr->cfg.sim_sample > 0 && !(x->part && (x->part->attach || x->part->forward_done));
    if (sampled) {
        sampled_step s = {tr, &pass};
        nd_comm_sampled(tr->cfg.sim_sample, forward_backward, &s);
    } else {
        if (x->part && x->part->attach) x->part->attach(x->self, &x->env, &pass);
        forward_loss(tr, &pass);
    }
    if (tr->cfg.fault_signal_step == tr->state.step + 1 && tr->rank == tr->size - 1 && tr->stop_request &&
        !*tr->stop_request)
        raise(nd_stop_signals[tr->cfg.fault_signal]); /* --fault-signal-step: through the real handler */
    nd_stop_mark(tr, m->grad + m->num_params);        /* a pending signal rides on this step's exchange */
    if (tr->cfg.fault_nan_step == tr->state.step + 1 &&
        tr->worker_index == 0) /* --fault-nan-step: exercise the guard */
        m->grad[m->num_params + ND_TAIL_LOSS] = NAN;
    if (sampled) {
        nd_clock_tick(clock, ND_PHASE_BACKWARD);
        return;
    }
    if (x->part && x->part->forward_done) x->part->forward_done(x->self, &x->env);
    nd_clock_tick(clock, ND_PHASE_FORWARD);
    nd_model_backward(m, tr->xb, b);
    nd_clock_tick(clock, ND_PHASE_BACKWARD);
}

void nd_train_eval_sums(nd_trainer *tr, const nd_shard *shard, double sums[3]) {
    const int eb = tr->cfg.eval_batch < tr->model.max_batch ? tr->cfg.eval_batch : tr->model.max_batch;
    const int cols = tr->info.train.cols, k = tr->info.num_outputs;
    sums[0] = sums[1] = 0.0;
    sums[2] = (double)shard->rows;
    for (int off = 0; off < shard->rows; off += eb) {
        const int nb = shard->rows - off < eb ? shard->rows - off : eb;
        const float *out = nd_model_forward(&tr->model, shard->x + (size_t)off * cols, nb, NULL);
        nd_loss_stats st = nd_loss_apply(tr->loss, NULL, out, shard->y ? shard->y + off : NULL,
                                         shard->t ? shard->t + (size_t)off * k : NULL, nb, k);
        sums[0] += st.loss_sum;
        sums[1] += st.correct;
    }
}

nd_status nd_trainer_evaluate(nd_trainer *tr, const nd_shard *shard, double *loss, double *acc, nd_error *err) {
    double sums[3];
    nd_train_eval_sums(tr, shard, sums);
    nd_watchdog_enter(tr->watchdog, "the evaluation's sums", tr->state.step);
    ND_TRY(nd_comm_allreduce_sum_f64(tr->comm, sums, 3, err));
    nd_watchdog_leave(tr->watchdog);
    *loss = sums[2] > 0 ? sums[0] / sums[2] : NAN;
    *acc = nd_loss_metric(tr->loss, sums[1], sums[2], tr->info.num_outputs);
    return ND_OK;
}
