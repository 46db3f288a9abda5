/* --compress topk: top-k sparsification with error feedback (Lin et al.
 * 2018, Deep Gradient Compression, without its momentum correction). Each
 * step every rank adds its residual to its gradient, picks the k = ceil(ratio
 * n) entries of largest magnitude over the whole trainable gradient (global,
 * not per tensor: one selection, and the layers compete for the budget as
 * DGC's threshold sampling lets them), and sends them as (index, value)
 * pairs by one allgather; what it did not send stays in its residual. Every
 * rank adds all the pairs into a zeroed gradient in rank order, so all
 * replicas get the same sum. The running statistics and the loss tail are
 * few floats and travel exact, in one fp32 allreduce. */
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/compress.h"
#include "../exchange.h"
#include "feedback.h"

typedef struct {
    nd_feedback fb;
    size_t k;
    float *scratch;     /* (len) magnitudes for the selection */
    uint32_t *where;    /* (len) indices of the selection's candidates */
    nd_topk_pair *mine; /* (k) this rank's pairs */
    nd_topk_pair *all;  /* (size x k) everyone's, rank by rank */
} topk;

static void destroy(void *self) {
    topk *t = self;
    if (!t) return;
    nd_buffer_free(t->fb.residual), nd_buffer_free(t->scratch);
    free(t->where);
    free(t->mine), free(t->all);
    free(t);
}

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    const size_t len = env->model->num_trainable - env->lo;
    if (len > (size_t)UINT32_MAX) return ND_FAIL(err, ND_ERR_ARG, "--compress topk: %zu parameters is too many", len);
    topk *t = *self = calloc(1, sizeof *t);
    if (!t) return ND_FAIL(err, ND_ERR_NOMEM, "--compress topk: cannot allocate its state");
    t->fb.lo = env->lo, t->fb.len = len;
    t->k = len ? nd_topk_count(len, env->cfg->topk_ratio) : 0;
    if (!(t->fb.residual = nd_buffer_alloc(len + 1)) || !(t->scratch = nd_buffer_alloc(len + 1)) ||
        !(t->where = calloc(len + 1, sizeof *t->where)) || !(t->mine = calloc(t->k + 1, sizeof *t->mine)) ||
        !(t->all = calloc((t->k + 1) * (size_t)env->size, sizeof *t->all)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--compress topk: cannot allocate the residual and the pair buffers");
    memset(t->fb.residual, 0, sizeof(float) * len);
    return ND_OK;
}

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    topk *t = self;
    nd_model *m = env->model;
    const size_t len = t->fb.len, k = t->k, trained = m->num_trainable;
    float *restrict g = m->grad + t->fb.lo, *restrict e = t->fb.residual;
    if (k) nd_topk_accumulate_select(e, g, len, k, t->scratch, t->where, t->mine); /* a = g + e, kept in e */
    for (size_t j = 0; j < k; ++j) e[t->mine[j].index] = 0.0f; /* e = a - c: what was sent is owed no more */
    nd_clock_tick(clock, ND_PHASE_COMM);                       /* the selection is the exchange's work, not waiting */
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    nd_watchdog_enter(env->watchdog, "the top-k gradient exchange (every rank had arrived)", step + 1);
    const size_t exact = m->num_params - trained + env->tail;
    nd_status st = nd_comm_allreduce_sum_f32(env->comm, m->grad + trained, exact, err);
    if (st == ND_OK) st = nd_comm_allgather_bytes(env->comm, t->mine, k * sizeof *t->mine, t->all, err);
    nd_watchdog_leave(env->watchdog);
    ND_TRY(st);
    memset(g, 0, sizeof(float) * len);
    for (size_t j = 0; j < k * (size_t)env->size; ++j) g[t->all[j].index] += t->all[j].value;
    /* as a ring allgather (this rank's pairs to the p - 1 others) and a ring allreduce move them */
    t->fb.bytes += (long long)((size_t)(env->size - 1) * k * sizeof *t->mine) +
        nd_ring_allreduce_bytes(exact, sizeof(float), env->size);
    return ND_OK;
}

static bool chosen(const nd_train_config *c) { return c->compress == ND_COMPRESS_TOPK; }

const nd_exchange_part nd_exchange_topk = {
    /* a dropped (non-finite) step would stay in the residual, and every later step with it */
    .caps = {.name = "top-k",
             .chosen_by = "--compress topk",
             .chosen = chosen,
             .sync_bn = true,
             .skip_step = false,
             .whole_replica = true,
             .streams = true,
             .freezes = true},
    .create = create,
    .destroy = destroy,
    .reduce = reduce,
    .wire_bytes = nd_feedback_wire_bytes,
};
