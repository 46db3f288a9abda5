/* --mode local: local SGD, periodic model averaging (Lin et al. 2020,
 * "Don't use large mini-batches, use local SGD"; PyTorch's PostLocalSGD).
 * Each rank steps on its own batch's gradient (scaled by its local batch,
 * penalties and clipping on it alone) with its own optimizer state; every
 * --sync-every H steps after the --sync-warmup S plain sync steps, one
 * allreduce averages the trainable parameters. Optionally the average is a
 * slow outer step (DiLoCo, Douillard et al. 2023): with the global
 * parameters a at the latest average, the pseudo-gradient d = a - mean of
 * the replicas, v = M v + d, a -= L (d + M v) (Nesterov); every replica
 * becomes a. M = 0, L = 1 is plain averaging (taken without the buffers).
 *
 * Every step still allreduces a few floats: the batch-norm running
 * statistics (so every replica keeps the global batch's, as in sync mode),
 * the loss and hits (the epoch line and step losses stay global) and the
 * stop signals (every rank stops after the same step). A non-finite local
 * gradient poisons the loss it sends, so the guard's verdict is the same
 * on every rank.
 *
 * The replicas are whole again (parameters and optimizer state averaged)
 * after every epoch's last step, a --checkpoint-every step and a stop
 * signal's step: evaluation, the epoch line, early stopping and rank 0's
 * checkpoint see the one averaged model, and a resume from any checkpoint
 * is exact (the outer velocity is not saved: plan.c refuses it with
 * checkpoints). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "../exchange.h"
#include "../train_internal.h"

typedef struct {
    float *anchor;   /* (num_params) the outer step's global parameters a at the latest average, or NULL (plain) */
    float *velocity; /* (num_params) the outer momentum v, or NULL (M = 0) */
    bool anchored;   /* anchor was set in this process (at its first step) */
    double wire;     /* bytes this rank sent in the run so far */
    char bad[160];   /* this rank's own gradient was not finite, in words ("": it was) */
} local;

/* This rank's gradient is not finite: the guard's evidence (guard.c) on
 * the local gradient, the biases' and batch-norm shifts' values, which see
 * every NaN of their layer; said in what (cap chars). */
static bool local_nonfinite(const nd_model *m, char *what, size_t cap) {
    for (int t = 0; t < m->num_tensors; ++t) {
        const nd_tensor *T = &m->tensor[t];
        if (T->role != ND_TENSOR_BIAS && T->role != ND_TENSOR_BN_SCALE && T->role != ND_TENSOR_BN_SHIFT) continue;
        for (size_t i = 0; i < T->span.length; ++i)
            if (!isfinite(m->grad[T->span.offset + i])) {
                snprintf(what, cap, "the gradient of %s[%zu] is not finite on this rank", T->name, i);
                return true;
            }
    }
    return false;
}

/* Any rank received a stop signal (the exchanged tail's counts: stop.c). */
static bool stop_agreed(const float *tail) {
    for (int i = 0; i < ND_STOP_SIGNALS; ++i)
        if (tail[ND_TAIL_STOP + i] > 0.0f) return true;
    return false;
}

static bool outer(const nd_train_config *c) { return c->outer_momentum > 0.0f || c->outer_lr != 1.0f; }

static void destroy(void *self) {
    local *l = self;
    if (!l) return;
    nd_buffer_free(l->anchor), nd_buffer_free(l->velocity);
    free(l);
}

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    local *l = *self = calloc(1, sizeof *l);
    if (!l) return ND_FAIL(err, ND_ERR_NOMEM, "--mode local: cannot allocate its state");
    const size_t n = env->model->num_params;
    if (outer(env->cfg) && !(l->anchor = nd_buffer_alloc(n)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--outer-lr: cannot allocate the global parameters (%zu floats)", n);
    if (env->cfg->outer_momentum > 0.0f && !(l->velocity = nd_buffer_alloc(n)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--outer-momentum: cannot allocate its velocity (%zu floats)", n);
    return ND_OK;
}

/* A ring allreduce of n floats sends 2(p-1)/p of them from each rank. */
static double ring_bytes(const nd_exchange_env *env, size_t n) {
    return env->size > 1 ? 2.0 * (env->size - 1) / env->size * 4.0 * (double)n : 0.0;
}

/* Collective: buf[0, n) becomes its sum over ranks (watched, counted). */
static nd_status sum(local *l, const nd_exchange_env *env, float *buf, size_t n, const char *what, long step,
                     nd_error *err) {
    nd_watchdog_enter(env->watchdog, what, step + 1);
    const nd_status st = nd_comm_allreduce_sum_f32(env->comm, buf, n, err);
    nd_watchdog_leave(env->watchdog);
    l->wire += ring_bytes(env, n);
    return st;
}

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    local *l = self;
    nd_model *m = env->model;
    const size_t n = m->num_params, t = m->num_trainable;
    /* The run's first step (also after a resume) and the first local step
     * after the warm-up start from whole replicas. */
    if (l->anchor && (!l->anchored || step == env->cfg->sync_warmup)) memcpy(l->anchor, m->param, sizeof(float) * n);
    l->anchored = true;
    l->bad[0] = '\0';
    if (step < env->cfg->sync_warmup) { /* post-local SGD's warm-up: a plain sync step */
        ND_TRY(nd_exchange_arrive(env, step, clock, err));
        return sum(l, env, m->grad + env->lo, n + env->tail - env->lo,
                   "the gradient allreduce (every rank had arrived)", step, err);
    }
    if (local_nonfinite(m, l->bad, sizeof l->bad)) m->grad[n + ND_TAIL_LOSS] = NAN;
    /* The running statistics, then the tail: contiguous. */
    return sum(l, env, m->grad + t, n - t + env->tail, "the local step's loss allreduce", step, err);
}

/* Penalties and clipping on this rank's gradient alone, averaged over its
 * own batch (a warm-up step's over the global batch, as sync mode). Norms
 * on the steps the loop reports them: --log-every's and the epoch's last. */
static nd_status scale(void *self, const nd_exchange_env *env, long step, int samples, float *out,
                       nd_clip_figures *clip, nd_error *err) {
    (void)self, (void)err;
    const nd_train_config *c = env->cfg;
    const long done = step + 1;
    const bool want = (c->log_every > 0 && done % c->log_every == 0) ||
        (env->steps_per_epoch > 0 && done % env->steps_per_epoch == 0);
    *out = nd_penalty_scale_all(env->penalty, env->model, step < c->sync_warmup ? samples : c->batch, want, clip);
    return ND_OK;
}

static int bad_step(const void *self, char *what, size_t cap) {
    const local *l = self;
    if (!l->bad[0]) return 0;
    snprintf(what, cap, "%s", l->bad);
    return 1;
}

/* Collective: x[lo, hi) becomes its mean over ranks. */
static nd_status average(local *l, const nd_exchange_env *env, float *x, size_t lo, size_t hi, const char *what,
                         long step, nd_error *err) {
    ND_TRY(sum(l, env, x + lo, hi - lo, what, step, err));
    const float inv = 1.0f / (float)env->size;
    for (size_t i = lo; i < hi; ++i) x[i] *= inv;
    return ND_OK;
}

/* The outer step on the mean in p[lo, hi): a, v and every replica move. */
static void outer_step(local *l, const nd_train_config *c, float *restrict p, size_t lo, size_t hi) {
    float *restrict a = l->anchor, *restrict v = l->velocity;
    const float mu = c->outer_momentum, rate = c->outer_lr;
    for (size_t i = lo; i < hi; ++i) {
        const float delta = a[i] - p[i]; /* the pseudo-gradient */
        float step = delta;
        if (v) v[i] = mu * v[i] + delta, step = delta + mu * v[i];
        a[i] -= rate * step;
        p[i] = a[i];
    }
}

static nd_status after_update(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    local *l = self;
    const nd_train_config *c = env->cfg;
    nd_model *m = env->model;
    const size_t n = m->num_params, lo = env->lo, t = m->num_trainable;
    const long done = step + 1;
    if (done <= c->sync_warmup) return ND_OK; /* every replica took the same step */
    const long every = c->checkpoint_dir[0] ? c->checkpoint_every : 0;
    const bool whole = (env->steps_per_epoch > 0 && done % env->steps_per_epoch == 0) ||
        (every > 0 && done % every == 0) || stop_agreed(m->grad + n);
    if (!whole && (done - c->sync_warmup) % c->sync_every != 0) return ND_OK;
    nd_clock_tick(clock, ND_PHASE_UPDATE);
    ND_TRY(average(l, env, m->param, lo, t, "the parameter average", step, err));
    if (l->anchor) outer_step(l, c, m->param, lo, t);
    /* Whole replicas: the optimizer state too, so rank 0's checkpoint is every rank's. */
    const nd_optimizer *o = env->opt;
    if (whole && o && o->m) ND_TRY(average(l, env, o->m, lo, t, "the optimizer state average", step, err));
    if (whole && o && o->v) ND_TRY(average(l, env, o->v, lo, t, "the optimizer state average", step, err));
    nd_clock_tick(clock, ND_PHASE_COMM);
    return ND_OK;
}

static long long wire_bytes(const void *self, const nd_exchange_env *env) {
    (void)env;
    return (long long)((const local *)self)->wire;
}

static bool chosen(const nd_train_config *c) { return c->mode == ND_MODE_LOCAL; }

const nd_exchange_part nd_exchange_local = {
    /* replicas differ between averages: no batch-norm sums inside a step, no per-step weight average */
    .caps = {.name = "local SGD",
             .chosen_by = "--mode local",
             .chosen = chosen,
             .sync_bn = false,
             .skip_step = false, /* a dropped step would drop its average (plan.c says so) */
             .whole_replica = true,
             .streams = true,
             .sliced = false,
             .freezes = true},
    .create = create,
    .destroy = destroy,
    .reduce = reduce,
    .scale = scale,
    .bad_step = bad_step,
    .after_update = after_update,
    .wire_bytes = wire_bytes,
};
