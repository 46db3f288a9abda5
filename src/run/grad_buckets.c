#include "grad_buckets.h"

#include <stdlib.h>
#include <string.h>

nd_status nd_buckets_create(nd_grad_buckets *b, nd_comm *comm, size_t n, size_t bucket_floats, int layers,
                            nd_error *err) {
    memset(b, 0, sizeof *b);
    b->comm = comm;
    b->bucket = bucket_floats;
    /* A bucket closes at the first call with >= bucket floats pending, so
     * there are at most n / bucket full ones, one more per layer (a layer's
     * end can close a short one), the statistics region and the remainder. */
    b->cap = (int)(n / bucket_floats) + 2 * layers + 4;
    if (!(b->reqs = calloc((size_t)b->cap, sizeof *b->reqs)))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate %d gradient bucket requests", b->cap);
    return ND_OK;
}

void nd_buckets_free(nd_grad_buckets *b) {
    free(b->reqs);
    memset(b, 0, sizeof *b);
}

void nd_buckets_begin(nd_grad_buckets *b, float *grad, size_t final_from, size_t end) {
    b->grad = grad;
    b->count = 0;
    b->top = end;
    b->st = ND_OK;
    nd_buckets_ready(b, final_from);
}

static void start_bucket(nd_grad_buckets *b, size_t lo) {
    if (b->st != ND_OK || lo >= b->top) return;
    if (b->count == b->cap) { /* cannot happen by the bound in create; never overrun */
        b->st = ND_FAIL(&b->err, ND_ERR_STATE, "gradient buckets: more than %d in one step", b->cap);
        return;
    }
    b->st = nd_comm_iallreduce_sum_f32(b->comm, b->grad + lo, b->top - lo, &b->reqs[b->count++], &b->err);
    b->top = lo;
    b->started += 1;
}

void nd_buckets_ready(void *ctx, size_t lo) {
    nd_grad_buckets *b = ctx;
    if (b->st != ND_OK) return;
    if (b->top - lo >= b->bucket) start_bucket(b, lo);
    if (b->st == ND_OK && b->count > 0) b->st = nd_comm_test_all(b->reqs, b->count, &b->err);
}

nd_status nd_buckets_finish(nd_grad_buckets *b, nd_error *err) {
    start_bucket(b, 0);
    if (b->st == ND_OK) b->st = nd_comm_wait_all_busy(b->reqs, b->count, &b->err);
    if (b->st != ND_OK) {
        *err = b->err;
        return b->st;
    }
    return ND_OK;
}
