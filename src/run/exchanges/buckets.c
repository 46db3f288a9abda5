/* --bucket-kb: the sync step's allreduce cut into buckets that go on the
 * wire, last layer first, while backward is still running. The model calls
 * ready() as each block of the gradient becomes final (its weight gradients
 * are computed in fixed row blocks with or without this hook, so the bits
 * equal the plain allreduce's); a bucket starts once enough is final, and
 * MPI is progressed between blocks. Buffers are sized at setup. */
#include <stdlib.h>
#include <string.h>

#include "../exchange.h"

typedef struct {
    nd_comm *comm;    /* not owned */
    float *grad;      /* the gradient buffer being summed (not owned) */
    size_t bucket;    /* floats: a bucket goes out once this many are final */
    size_t top;       /* grad[top, end) is already on the wire */
    nd_request *reqs; /* (cap) one per bucket of a step */
    int count, cap;
    long started;   /* buckets started in the run (for the summary) */
    long long sent; /* bytes this rank sent in the run (ring allreduces) */
    int ranks;
    nd_status st; /* the first failure inside backward, reported by reduce */
    nd_error err;
} buckets;

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    buckets *b = *self = calloc(1, sizeof *b);
    if (!b) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the gradient buckets");
    b->comm = env->comm;
    b->ranks = env->size;
    b->bucket = (size_t)env->cfg->bucket_kb * 1024 / sizeof(float);
    /* A bucket closes at the first call with >= bucket floats pending, so
     * there are at most n / bucket full ones, one more per weight block or
     * layer end (which can close a short one), the statistics region and
     * the remainder. */
    const nd_model *m = env->model;
    int blocks = 0;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        blocks += (L->grad_rows ? (L->out_dim + L->grad_rows - 1) / L->grad_rows : 0) + 1;
    }
    b->cap = (int)((m->num_params + env->tail) / b->bucket) + blocks + 4;
    if (!(b->reqs = calloc((size_t)b->cap, sizeof *b->reqs)))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate %d gradient bucket requests", b->cap);
    return ND_OK;
}

static void destroy(void *self) {
    buckets *b = self;
    if (b) free(b->reqs);
    free(b);
}

static void start_bucket(buckets *b, size_t lo) {
    if (b->st != ND_OK || lo >= b->top) return;
    if (b->count == b->cap) { /* cannot happen by the bound in create; never overrun */
        b->st = ND_FAIL(&b->err, ND_ERR_STATE, "gradient buckets: more than %d in one step", b->cap);
        return;
    }
    b->st = nd_comm_iallreduce_sum_f32(b->comm, b->grad + lo, b->top - lo, &b->reqs[b->count++], &b->err);
    b->sent += nd_ring_allreduce_bytes(b->top - lo, sizeof(float), b->ranks);
    b->top = lo;
    b->started += 1;
}

/* The model's grad_ready hook: grad[lo, ..) is final. Collective in
 * effect: every rank makes the same calls. */
static void ready(void *ctx, size_t lo) {
    buckets *b = ctx;
    if (b->st != ND_OK) return;
    if (b->top - lo >= b->bucket) start_bucket(b, lo);
    if (b->st == ND_OK && b->count > 0) b->st = nd_comm_test_all(b->reqs, b->count, &b->err);
}

static void attach(void *self, const nd_exchange_env *env, nd_train_pass *pass) {
    (void)env;
    pass->grad_ready = ready;
    pass->ready_ctx = self;
}

/* The running statistics and the tail are final: the first bucket. */
static void forward_done(void *self, const nd_exchange_env *env) {
    buckets *b = self;
    const nd_model *m = env->model;
    b->grad = m->grad;
    b->count = 0;
    b->top = m->num_params + env->tail;
    b->st = ND_OK;
    ready(b, m->num_trainable);
}

/* Sends what is left and waits for every bucket (the waits are timed by
 * the communicator, so no arrival barrier: there comm is all that backward
 * did not hide). */
static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    (void)clock;
    buckets *b = self;
    nd_watchdog_enter(env->watchdog, "the gradient allreduce (every rank had arrived)", step + 1);
    start_bucket(b, 0);
    if (b->st == ND_OK) b->st = nd_comm_wait_all_busy(b->reqs, b->count, &b->err);
    nd_watchdog_leave(env->watchdog);
    if (b->st != ND_OK) {
        *err = b->err;
        return b->st;
    }
    return ND_OK;
}

static long messages(const void *self) { return ((const buckets *)self)->started; }

static long long wire_bytes(const void *self, const nd_exchange_env *env) {
    (void)env;
    return ((const buckets *)self)->sent;
}

/* With --compress fp16|bf16 the wire16 part does its own buckets. */
static bool chosen(const nd_train_config *c) { return c->bucket_kb > 0 && c->compress == ND_COMPRESS_NONE; }

const nd_exchange_part nd_exchange_buckets = {
    .caps = {.name = "bucketed allreduce",
             .chosen_by = "--bucket-kb",
             .chosen = chosen,
             .sync_bn = true,
             .skip_step = true,
             .whole_replica = true,
             .streams = true},
    .create = create,
    .destroy = destroy,
    .attach = attach,
    .forward_done = forward_done,
    .reduce = reduce,
    .messages = messages,
    .wire_bytes = wire_bytes,
};
