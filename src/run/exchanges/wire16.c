/* --compress fp16|bf16: the sync step's gradient goes on the wire as 16-bit
 * values but is summed in fp32. Each rank rounds its gradient to 16 bits
 * and cuts it in one block per rank; an alltoall sends block r to rank r
 * (a reduce-scatter in 16-bit wire format); rank r adds the p copies of
 * its block in fp32, in rank order (the same bits whatever the timing),
 * rounds the sum once to 16 bits, and an allgather of the 16-bit blocks
 * gives every rank the whole sum. Each rank sends 2 (p-1)/p n 2 bytes, half
 * of a ring allreduce of floats, and no value is rounded more than twice
 * (once before sending, once after the sum) whatever the rank count, as an
 * allreduce with a 16-bit sum at every hop would be.
 *
 * fp16 tops out at 65504, and a batch's gradient sum can be large: each
 * rank sends g / p (exact for p a power of two), so the rounded sum is the
 * mean over ranks, no larger than the largest rank's value, and the result
 * is multiplied back by p in fp32: the optimizer gets the sum it expects.
 * A value that overflows anyway arrives as an infinity on every rank and
 * the step is a bad one (bad_step: --on-nan decides). bf16 has fp32's
 * range: no scaling.
 *
 * The batch-norm statistics and the loss tail are sent exact, in a fp32
 * allreduce of their own (a few floats per layer).
 *
 * With --bucket-kb the 16-bit part goes in buckets during backward, last
 * layer first, as buckets.c does: each bucket's alltoall starts once
 * enough of the gradient is final; when it completes (tested as backward
 * hands over each block) its sum is made and its allgather started;
 * reduce() sends the rest and finishes every bucket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/half.h"
#include "../exchange.h"

/* A bucket: grad[lo, lo + len) in p blocks of `chunk` values (the last
 * padded with zeros) at `off` in the 16-bit buffers. */
typedef struct {
    size_t lo, len, chunk, off;
} bucket;

typedef struct {
    nd_half_kind kind;
    float to_wire, from_wire; /* fp16: 1/p and p; bf16: 1 */
    nd_comm *comm;            /* not owned: the alltoalls and the exact allreduce */
    /* Bucketed: the allgathers, on a communicator of their own. A bucket's
     * allgather starts when its alltoall is seen done, which depends on
     * timing, and MPI wants the collectives of a communicator started in
     * the same order on every rank: each communicator's are, in bucket
     * order. Owned; NULL when blocking or on one rank. */
    nd_comm *gather_comm;
    float *grad; /* the gradient being summed (not owned) */
    int ranks;
    size_t lo, hi;        /* grad[lo, hi) goes in 16 bits: the trainable part but a frozen base */
    size_t exact;         /* floats from hi on sent in fp32: statistics and the tail */
    size_t bucket_floats; /* --bucket-kb in floats; 0: one blocking exchange after backward */
    uint16_t *send;       /* (cap16) this rank's 16-bit gradient; a bucket's own sum once its alltoall is done */
    uint16_t *recv;       /* (cap16) the p copies of this rank's blocks */
    uint16_t *sum;        /* (cap16) the whole rounded sum */
    size_t cap16;
    bucket *buckets;        /* (cap) of a step, last layer first */
    nd_request *a2a, *gath; /* (cap) each bucket's alltoall and allgather */
    nd_request exact_req;   /* bucketed: the exact part's allreduce */
    int count, cap;         /* buckets started in the step, room for */
    int gathered, finished; /* buckets [0, gathered) have their allgather started, [0, finished) are back in grad */
    size_t top, used16;     /* grad[top, hi) is on the wire; send[0, used16) taken */
    int finite;             /* every value of the step came back finite */
    long started;           /* buckets started in the run (for the summary) */
    long long sent;         /* bytes this rank sent in the run */
    nd_status st;           /* the first failure inside backward, reported by reduce */
    nd_error err;
} wire16;

/* Collective (the allgathers' communicator). */
static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    wire16 *w = *self = calloc(1, sizeof *w);
    if (!w) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the 16-bit gradient exchange");
    const nd_model *m = env->model;
    const int p = env->size;
    w->bucket_floats = (size_t)env->cfg->bucket_kb * 1024 / sizeof(float);
    if (w->bucket_floats > 0 && p > 1) {
        ND_TRY(nd_comm_split(env->comm, 0, &w->gather_comm, err));
        nd_comm_set_timeout(w->gather_comm, env->cfg->timeout); /* the stall watchdog, as on the step's comm */
    }
    w->kind = env->cfg->compress == ND_COMPRESS_FP16 ? ND_HALF_FP16 : ND_HALF_BF16;
    w->to_wire = w->kind == ND_HALF_FP16 ? 1.0f / (float)p : 1.0f;
    w->from_wire = w->kind == ND_HALF_FP16 ? (float)p : 1.0f;
    w->comm = env->comm;
    w->ranks = p;
    w->lo = env->lo < m->num_trainable ? env->lo : m->num_trainable;
    w->hi = m->num_trainable;
    w->exact = m->num_params + env->tail - w->hi;
    /* As in buckets.c: at most n / bucket full buckets, one more per weight
     * block or layer end, and the remainder. */
    const size_t n = w->hi - w->lo;
    w->cap = 1;
    if (w->bucket_floats > 0) {
        int blocks = 0;
        for (int l = 0; l < m->num_layers; ++l) {
            const nd_layer *L = &m->layer[l];
            blocks += (L->grad_rows ? (L->out_dim + L->grad_rows - 1) / L->grad_rows : 0) + 1;
        }
        w->cap = (int)(n / w->bucket_floats) + blocks + 4;
    }
    w->cap16 = n + (size_t)w->cap * (size_t)p; /* each bucket pads to a multiple of p */
    if (!(w->send = calloc(w->cap16, sizeof *w->send)) || !(w->recv = calloc(w->cap16, sizeof *w->recv)) ||
        !(w->sum = calloc(w->cap16, sizeof *w->sum)) || !(w->buckets = calloc((size_t)w->cap, sizeof *w->buckets)) ||
        !(w->a2a = calloc((size_t)w->cap, sizeof *w->a2a)) || !(w->gath = calloc((size_t)w->cap, sizeof *w->gath)))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the 16-bit gradient buffers (%zu values)", w->cap16);
    return ND_OK;
}

static void destroy(void *self) {
    wire16 *w = self;
    if (w) {
        nd_comm_free(w->gather_comm);
        free(w->send), free(w->recv), free(w->sum), free(w->buckets), free(w->a2a), free(w->gath);
    }
    free(w);
}

/* grad[lo, top) rounded into the next free part of send, and its alltoall
 * started (blocking: done). */
static void start_bucket(wire16 *w, size_t lo, int blocking) {
    if (w->st != ND_OK || lo >= w->top) return;
    if (w->count == w->cap) { /* cannot happen by the bound in create; never overrun */
        w->st = ND_FAIL(&w->err, ND_ERR_STATE, "16-bit gradient buckets: more than %d in one step", w->cap);
        return;
    }
    const int i = w->count;
    bucket *b = &w->buckets[i];
    *b = (bucket){.lo = lo, .len = w->top - lo, .off = w->used16};
    b->chunk = (b->len + (size_t)w->ranks - 1) / (size_t)w->ranks;
    const size_t padded = b->chunk * (size_t)w->ranks;
    nd_half_from_f32(w->kind, w->send + b->off, w->grad + lo, w->to_wire, b->len);
    memset(w->send + b->off + b->len, 0, sizeof(uint16_t) * (padded - b->len));
    w->st = blocking
        ? nd_comm_alltoall_u16(w->comm, w->send + b->off, w->recv + b->off, b->chunk, &w->err)
        : nd_comm_ialltoall_u16(w->comm, w->send + b->off, w->recv + b->off, b->chunk, &w->a2a[i], &w->err);
    w->used16 += padded;
    w->top = lo;
    w->count += 1;
    w->started += 1;
    /* an alltoall and a ring allgather: p-1 blocks each */
    w->sent += 2LL * (w->ranks - 1) * (long long)b->chunk * (long long)sizeof(uint16_t);
}

/* The next bucket's alltoall is done: this rank's block summed in fp32
 * and rounded once (into its own send block, no longer needed), and the
 * allgather of the sums started (blocking: done). */
static void gather_next(wire16 *w, int blocking) {
    const bucket *b = &w->buckets[w->gathered];
    uint16_t *mine = w->send + b->off;
    nd_half_sum(w->kind, mine, w->recv + b->off, b->chunk, b->chunk, w->ranks);
    w->st = blocking ? nd_comm_allgather_u16(w->comm, mine, w->sum + b->off, b->chunk, &w->err)
                     : nd_comm_iallgather_u16(w->gather_comm ? w->gather_comm : w->comm, mine, w->sum + b->off,
                                              b->chunk, &w->gath[w->gathered], &w->err);
    w->gathered += 1;
}

/* The next bucket's allgather is done: the sum back into grad. */
static void finish_next(wire16 *w) {
    const bucket *b = &w->buckets[w->finished];
    w->finite &= nd_half_to_f32(w->kind, w->grad + b->lo, w->sum + b->off, w->from_wire, b->len);
    w->finished += 1;
}

/* Lets MPI progress the step's collectives and moves the buckets whose
 * collective completed on, in bucket order. */
static void advance(wire16 *w) {
    if (w->st == ND_OK) w->st = nd_comm_test_all(&w->exact_req, 1, &w->err);
    if (w->st == ND_OK) w->st = nd_comm_test_all(w->a2a + w->gathered, w->count - w->gathered, &w->err);
    while (w->st == ND_OK && w->gathered < w->count && !w->a2a[w->gathered].active) gather_next(w, 0);
    if (w->st == ND_OK) w->st = nd_comm_test_all(w->gath + w->finished, w->gathered - w->finished, &w->err);
    while (w->st == ND_OK && w->finished < w->gathered && !w->gath[w->finished].active) finish_next(w);
}

/* The model's grad_ready hook: grad[lo, ..) is final. Collective in
 * effect: every rank makes the same calls. */
static void ready(void *ctx, size_t lo) {
    wire16 *w = ctx;
    if (w->st != ND_OK) return;
    if (lo < w->lo) lo = w->lo;
    if (w->top > lo && w->top - lo >= w->bucket_floats) start_bucket(w, lo, 0);
    advance(w);
}

static void attach(void *self, const nd_exchange_env *env, nd_train_pass *pass) {
    (void)env;
    wire16 *w = self;
    if (w->bucket_floats == 0) return;
    pass->grad_ready = ready;
    pass->ready_ctx = self;
}

static void begin_step(wire16 *w, const nd_exchange_env *env) {
    w->grad = env->model->grad;
    w->count = w->gathered = w->finished = 0;
    w->used16 = 0;
    w->top = w->hi;
    w->finite = 1;
    w->st = ND_OK;
}

/* Bucketed: the statistics and the tail are final, their exact allreduce
 * goes first. */
static void forward_done(void *self, const nd_exchange_env *env) {
    wire16 *w = self;
    if (w->bucket_floats == 0) return;
    begin_step(w, env);
    w->st = nd_comm_iallreduce_sum_f32(w->comm, w->grad + w->hi, w->exact, &w->exact_req, &w->err);
}

/* The step's work after backward: the one blocking exchange, or the last
 * bucket and the wait for every bucket. */
static void finish_step(wire16 *w, const nd_exchange_env *env) {
    if (w->bucket_floats == 0) {
        begin_step(w, env);
        start_bucket(w, w->lo, 1);
        if (w->st == ND_OK && w->count) gather_next(w, 1);
        if (w->st == ND_OK && w->count) finish_next(w);
        if (w->st == ND_OK) w->st = nd_comm_allreduce_sum_f32(w->comm, w->grad + w->hi, w->exact, &w->err);
        return;
    }
    start_bucket(w, w->lo, 0);
    /* Each alltoall in turn: its end starts its allgather while the later
     * ones are still in flight. */
    while (w->st == ND_OK && w->gathered < w->count) {
        w->st = nd_comm_wait_all_busy(&w->a2a[w->gathered], 1, &w->err);
        advance(w);
    }
    if (w->st == ND_OK) w->st = nd_comm_wait_all_busy(&w->exact_req, 1, &w->err);
    if (w->st == ND_OK) w->st = nd_comm_wait_all_busy(w->gath + w->finished, w->count - w->finished, &w->err);
    while (w->st == ND_OK && w->finished < w->count) finish_next(w);
}

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    wire16 *w = self;
    /* Blocking: the arrival barrier splits the wait for the slowest rank
     * from the transfer, as the plain allreduce does; bucketed: the waits
     * are what backward did not hide. */
    if (w->bucket_floats == 0) ND_TRY(nd_exchange_arrive(env, step, clock, err));
    nd_watchdog_enter(env->watchdog, "the 16-bit gradient exchange (every rank had arrived)", step + 1);
    finish_step(w, env);
    nd_watchdog_leave(env->watchdog);
    w->sent += nd_ring_allreduce_bytes(w->exact, sizeof(float), w->ranks);
    if (w->st != ND_OK) {
        *err = w->err;
        return w->st;
    }
    return ND_OK;
}

static int bad_step(const void *self, char *what, size_t cap) {
    const wire16 *w = self;
    if (w->finite) return 0;
    if (w->kind == ND_HALF_FP16)
        snprintf(what, cap,
                 "a gradient value is not finite or overflowed --compress fp16 (the mean over ranks of a "
                 "rank's batch sum must stay within +-65504; bf16 has fp32's range)");
    else snprintf(what, cap, "a gradient value is not finite (or overflowed --compress bf16)");
    return 1;
}

/* Buckets started in the run (the summary's gradient_buckets); 0 when blocking. */
static long messages(const void *self) {
    const wire16 *w = self;
    return w->bucket_floats > 0 ? w->started : 0;
}

static long long wire_bytes(const void *self, const nd_exchange_env *env) {
    (void)env;
    return ((const wire16 *)self)->sent;
}

static bool chosen(const nd_train_config *c) {
    return c->compress == ND_COMPRESS_FP16 || c->compress == ND_COMPRESS_BF16;
}

const nd_exchange_part nd_exchange_wire16 = {
    .caps = {.name = "16-bit wire",
             .chosen_by = "--compress fp16|bf16",
             .chosen = chosen,
             .sync_bn = true,
             .skip_step = true,
             .whole_replica = true,
             .streams = true,
             .freezes = true},
    .create = create,
    .destroy = destroy,
    .attach = attach,
    .forward_done = forward_done,
    .reduce = reduce,
    .bad_step = bad_step,
    .messages = messages,
    .wire_bytes = wire_bytes,
};
