/* --compress powersgd: PowerSGD rank r with error feedback (Vogels et al.
 * 2019; PyTorch's powerSGD_hook is the reference). Every trainable weight
 * tensor seen as a matrix M (dense: out x in; conv: out x in*kh*kw) whose
 * smaller side exceeds r is sent as two thin factors: P = M Q (Q warm-
 * started from the previous step, first drawn from a normal of the run's
 * seed, so every rank has the same), P summed over ranks and
 * orthogonalized, Q = M^T P summed over ranks, and the sum is approximated
 * by P Q^T (the projection of the sum of the M onto P's columns). All the
 * P go in one allreduce, all the Q in another. The rest (biases, batch-norm
 * arrays, small matrices, the running statistics and the loss tail) rides
 * exact after the P in the first allreduce.
 *
 * Error feedback as PyTorch's hook: M = g + e on each rank, and
 * e = M - P Q^T / ranks, each rank's share of the sum it was given. The
 * result stays a sum over ranks, as the other exchanges give. */
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/compress.h"
#include "nndist/rng.h"
#include "../exchange.h"
#include "feedback.h"

typedef struct {
    nd_feedback fb;
    int r, count;
    nd_psgd_matrix *mats; /* (count) offsets relative to lo, increasing */
    size_t p_len, q_len;  /* floats of all the P and all the Q */
    float *p;             /* (p_len + exact_len) every P, then the exactly sent floats */
    float *q;             /* (q_len) every Q, kept from step to step (warm start) */
    nd_span *exact;       /* (exact_count) the spans of grad[lo, num_params + tail) sent exact */
    int exact_count;
    size_t exact_len;
} powersgd;

static void destroy(void *self) {
    powersgd *s = self;
    if (!s) return;
    nd_buffer_free(s->fb.residual), nd_buffer_free(s->p), nd_buffer_free(s->q);
    free(s->mats), free(s->exact);
    free(s);
}

static int by_offset(const void *a, const void *b) {
    const size_t x = ((const nd_psgd_matrix *)a)->offset, y = ((const nd_psgd_matrix *)b)->offset;
    return (x > y) - (x < y);
}

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    const nd_model *m = env->model;
    const size_t lo = env->lo, len = m->num_trainable - lo;
    const int r = env->cfg->powersgd_rank;
    powersgd *s = *self = calloc(1, sizeof *s);
    if (!s || !(s->mats = calloc((size_t)m->num_tensors + 1, sizeof *s->mats)) ||
        !(s->exact = calloc((size_t)m->num_tensors + 2, sizeof *s->exact)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--compress powersgd: cannot allocate its tables");
    s->fb.lo = lo, s->fb.len = len, s->r = r;
    for (int i = 0; i < m->num_tensors; ++i) {
        const nd_tensor *t = &m->tensor[i];
        if (t->role != ND_TENSOR_WEIGHT || t->layer < m->frozen_layers || t->span.offset < lo || t->dims[0] <= 0)
            continue;
        const size_t rows = (size_t)t->dims[0], cols = t->span.length / rows;
        if (rows <= (size_t)r || cols <= (size_t)r || rows * cols != t->span.length) continue;
        s->mats[s->count++] = (nd_psgd_matrix){.offset = t->span.offset - lo, .rows = (int)rows, .cols = (int)cols};
    }
    qsort(s->mats, (size_t)s->count, sizeof *s->mats, by_offset);
    size_t at = 0; /* relative to lo: the complement of the matrices in [0, num_params + tail - lo) */
    const size_t end = m->num_params + env->tail - lo;
    for (int i = 0; i < s->count; ++i) {
        nd_psgd_matrix *x = &s->mats[i];
        x->p_offset = s->p_len, x->q_offset = s->q_len;
        s->p_len += (size_t)x->rows * (size_t)r, s->q_len += (size_t)x->cols * (size_t)r;
        if (x->offset > at) s->exact[s->exact_count++] = (nd_span){at, x->offset - at};
        at = x->offset + (size_t)x->rows * (size_t)x->cols;
    }
    if (end > at) s->exact[s->exact_count++] = (nd_span){at, end - at};
    for (int i = 0; i < s->exact_count; ++i) s->exact_len += s->exact[i].length;
    if (!(s->fb.residual = nd_buffer_alloc(len + 1)) || !(s->p = nd_buffer_alloc(s->p_len + s->exact_len + 1)) ||
        !(s->q = nd_buffer_alloc(s->q_len + 1)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--compress powersgd: cannot allocate the residual and the factors");
    memset(s->fb.residual, 0, sizeof(float) * len);
    nd_rng rng; /* the same Q on every rank: a function of the seed alone */
    nd_rng_seed(&rng, env->cfg->seed, 0x9053d, 0);
    for (size_t i = 0; i < s->q_len; ++i) s->q[i] = (float)nd_rng_normal(&rng);
    return ND_OK;
}

/* A column of a Q that came out zero (its P column was dependent or zero
 * this step: a gradient of rank below r) would stay zero from then on,
 * P = M Q: it is drawn again, the same on every rank (Q is the sum, the
 * same everywhere, and the draw a function of the seed, the step and the
 * column's place). */
static void redraw_dead_columns(powersgd *s, unsigned long long seed, long step) {
    for (int i = 0; i < s->count; ++i) {
        float *q = s->q + s->mats[i].q_offset;
        const int cols = s->mats[i].cols;
        for (int j = 0; j < s->r; ++j) {
            int dead = 1;
            for (int c = 0; c < cols && dead; ++c) dead = q[(size_t)c * s->r + j] == 0.0f;
            if (!dead) continue;
            nd_rng rng;
            nd_rng_seed(&rng, seed, 0x9053d + 1 + (unsigned long long)i * 4096 + (unsigned long long)j,
                        (unsigned long long)step + 1);
            for (int c = 0; c < cols; ++c) q[(size_t)c * s->r + j] = (float)nd_rng_normal(&rng);
        }
    }
}

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    powersgd *s = self;
    float *restrict g = env->model->grad + s->fb.lo, *restrict e = s->fb.residual;
    const int r = s->r;
    nd_psgd_multiply_q(e, g, s->mats, s->count, r, s->q, s->p); /* M = g + e, kept in e; P = M Q */
    float *packed = s->p + s->p_len;
    for (int i = 0; i < s->exact_count; ++i) {
        memcpy(packed, g + s->exact[i].offset, sizeof(float) * s->exact[i].length);
        packed += s->exact[i].length;
    }
    nd_clock_tick(clock, ND_PHASE_COMM); /* P = M Q is the exchange's work, not waiting */
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    nd_watchdog_enter(env->watchdog, "PowerSGD's allreduce of P (every rank had arrived)", step + 1);
    nd_status st = nd_comm_allreduce_sum_f32(env->comm, s->p, s->p_len + s->exact_len, err);
    nd_watchdog_leave(env->watchdog);
    ND_TRY(st);
    packed = s->p + s->p_len;
    for (int i = 0; i < s->exact_count; ++i) {
        memcpy(g + s->exact[i].offset, packed, sizeof(float) * s->exact[i].length);
        packed += s->exact[i].length;
    }
    for (int i = 0; i < s->count; ++i) nd_psgd_orthogonalize(s->p + s->mats[i].p_offset, s->mats[i].rows, r);
    nd_psgd_multiply_p(e, s->mats, s->count, r, s->p, s->q);
    /* Arrive again before the second blocking collective: a rank that waits in the arrival sleeps, one that
     * waits inside the allreduce spins and takes the core of a rank still computing on a shared node. */
    nd_clock_tick(clock, ND_PHASE_COMM);
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    nd_watchdog_enter(env->watchdog, "PowerSGD's allreduce of Q", step + 1);
    st = nd_comm_allreduce_sum_f32(env->comm, s->q, s->q_len, err);
    nd_watchdog_leave(env->watchdog);
    ND_TRY(st);
    /* The sum's approximation P Q^T, and e = M - (this rank's share of it) */
    nd_psgd_decompress(g, e, 1.0f / (float)env->size, s->mats, s->count, r, s->p, s->q);
    redraw_dead_columns(s, env->cfg->seed, step);
    /* counted as the ring allreduces move them, as the other exchanges count */
    s->fb.bytes += nd_ring_allreduce_bytes(s->p_len + s->exact_len, sizeof(float), env->size) +
        nd_ring_allreduce_bytes(s->q_len, sizeof(float), env->size);
    return ND_OK;
}

static bool chosen(const nd_train_config *c) { return c->compress == ND_COMPRESS_POWERSGD; }

const nd_exchange_part nd_exchange_powersgd = {
    /* a dropped (non-finite) step would stay in the residual and in Q */
    .caps = {.name = "PowerSGD",
             .chosen_by = "--compress powersgd",
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
