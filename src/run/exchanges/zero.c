/* --shard-optimizer, ZeRO stage 1 (Rajbhandari et al. 2020): each rank keeps
 * the optimizer state of one slice of the arena only (the parameter
 * servers' split: nd_shard_range over the arena). A step reduce-scatters
 * the trainable gradient so each rank holds the sum of its own slice,
 * updates that slice, and allgathers the parameters. The running statistics
 * and the step's loss tail are few floats and are allreduced whole, so every
 * replica updates them as in plain sync mode. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/data.h"
#include "nndist/sched.h"
#include "../exchange.h"

typedef struct {
    int *rs_counts;   /* (size) floats of the trainable prefix each rank sums */
    int *counts;      /* (size) each rank's slice of the arena, for the allgather */
    int *displs;      /* (size) and where it starts */
    float *slice_sum; /* (this rank's rs count) where the reduce-scatter lands */
} zero;

static void destroy(void *self) {
    zero *z = self;
    if (!z) return;
    free(z->rs_counts), free(z->counts), free(z->displs);
    nd_buffer_free(z->slice_sum);
    free(z);
}

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    const int size = env->size;
    const size_t n = env->model->num_params, t = env->model->num_trainable;
    if (n > (size_t)INT32_MAX) return ND_FAIL(err, ND_ERR_ARG, "--shard-optimizer: %zu parameters is too many", n);
    zero *z = *self = calloc(1, sizeof *z);
    if (!z || !(z->rs_counts = calloc((size_t)size, sizeof(int))) || !(z->counts = calloc((size_t)size, sizeof(int))) ||
        !(z->displs = calloc((size_t)size, sizeof(int))))
        return ND_FAIL(err, ND_ERR_NOMEM, "--shard-optimizer: cannot allocate the slice table");
    for (int r = 0; r < size; ++r) {
        long off, len;
        nd_shard_range((long)n, r, size, &off, &len);
        z->counts[r] = (int)len, z->displs[r] = (int)off;
        const size_t a = (size_t)off < t ? (size_t)off : t, b = (size_t)(off + len) < t ? (size_t)(off + len) : t;
        z->rs_counts[r] = (int)(b - a);
    }
    if (!(z->slice_sum = nd_buffer_alloc((size_t)z->rs_counts[env->rank] + 1)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--shard-optimizer: cannot allocate the gradient slice");
    return ND_OK;
}

static nd_span slice(const void *self, const nd_exchange_env *env) {
    const zero *z = self;
    return (nd_span){(size_t)z->displs[env->rank], (size_t)z->counts[env->rank]};
}

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    zero *z = self;
    nd_model *m = env->model;
    const size_t t = m->num_trainable;
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    nd_watchdog_enter(env->watchdog, "the gradient allreduce (every rank had arrived)", step + 1);
    nd_status st = nd_comm_allreduce_sum_f32(env->comm, m->grad + t, m->num_params - t + env->tail, err);
    if (st == ND_OK) st = nd_comm_reduce_scatter_f32(env->comm, m->grad, z->slice_sum, z->rs_counts, err);
    nd_watchdog_leave(env->watchdog);
    ND_TRY(st);
    /* Back in place, so penalties, clipping and the optimizer see one arena. */
    memcpy(m->grad + z->displs[env->rank], z->slice_sum, sizeof(float) * (size_t)z->rs_counts[env->rank]);
    return ND_OK;
}

/* Penalties over this rank's slice; the global norm from each slice's sum
 * of squares, one scalar allreduce (always: it is the numerical guard's
 * evidence, since no rank holds the whole gradient). */
static nd_status scale(void *self, const nd_exchange_env *env, long step, int samples, float *out,
                       nd_clip_figures *clip, nd_error *err) {
    const zero *z = self;
    const size_t lo = (size_t)z->displs[env->rank], hi = lo + (size_t)z->rs_counts[env->rank];
    const bool by_value = env->penalty->clip_value > 0.0f;
    /* This slice's sum of squares after (and with --clip-value before) value clipping, and its clamped values. */
    double sums[3] = {0.0, 0.0, 0.0};
    size_t clamped = 0;
    *out = nd_penalty_apply(env->penalty, env->model, samples, lo, hi, by_value ? &sums[2] : NULL, &clamped);
    sums[1] = (double)clamped;
    const float *g = env->model->grad;
    for (size_t i = lo; i < hi; ++i) sums[0] += (double)g[i] * g[i];
    nd_watchdog_enter(env->watchdog, "the gradient norm's allreduce", step + 1);
    const nd_status st = nd_comm_allreduce_sum_f64(env->comm, sums, 3, err);
    nd_watchdog_leave(env->watchdog);
    ND_TRY(st);
    const double norm = sqrt(sums[0]) * fabs((double)*out);
    clip->before = by_value ? sqrt(sums[2]) : norm;
    clip->clamped = (size_t)sums[1];
    clip->clipped = sums[1] > 0;
    clip->after = norm;
    if (env->penalty->clip_norm > 0.0f) {
        const float f = nd_clip_norm_factor(norm, env->penalty->clip_norm);
        *out *= f;
        clip->after = norm * f; /* the norm of what the optimizer applies */
        clip->clipped |= f < 1.0f;
    }
    return ND_OK;
}

/* The guard reads the global norm: the bias gradients of other slices are
 * not here. */
static nd_status after_update(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    const zero *z = self;
    nd_clock_tick(clock, ND_PHASE_UPDATE);
    nd_watchdog_enter(env->watchdog, "the parameter allgather", step + 1);
    const nd_status st = nd_comm_allgatherv_f32(env->comm, env->model->param, z->counts, z->displs, err);
    nd_watchdog_leave(env->watchdog);
    nd_clock_tick(clock, ND_PHASE_COMM);
    return st;
}

static bool chosen(const nd_train_config *c) { return c->shard_optimizer; }

const nd_exchange_part nd_exchange_zero = {
    .caps = {.name = "sharded optimizer",
             .chosen_by = "--shard-optimizer",
             .chosen = chosen,
             .sync_bn = true,
             .skip_step = true,
             .whole_replica = true,
             .streams = true,
             .sliced = true},
    .create = create,
    .destroy = destroy,
    .slice = slice,
    .reduce = reduce,
    .scale = scale,
    .after_update = after_update,
};
