/* Gradient buckets: the sync step's allreduce split into pieces that go on
 * the wire, in reverse layer order, while backward is still running
 * (the model calls nd_buckets_ready as each block of the gradient becomes
 * final). Buffers are sized at setup; a step allocates nothing. */
#ifndef NNDIST_GRAD_BUCKETS_H
#define NNDIST_GRAD_BUCKETS_H

#include <stddef.h>

#include "nndist/comm.h"
#include "nndist/status.h"

typedef struct nd_grad_buckets nd_grad_buckets;

struct nd_grad_buckets {
    nd_comm *comm;       /* not owned */
    float *grad;         /* the gradient buffer being summed (not owned) */
    size_t bucket;       /* floats: a bucket goes out once this many are final */
    size_t top;          /* grad[top, end) is already on the wire */
    nd_request *reqs;    /* (cap) one per bucket of a step */
    int count, cap;
    long started;        /* buckets started in the run (for the summary) */
    nd_status st;        /* the first failure inside backward, reported by finish */
    nd_error err;
};

/* Sizes the request array for a gradient of n floats (plus the tail) cut
 * into buckets of bucket_floats (> 0) around `layers` layer boundaries. */
nd_status nd_buckets_create(nd_grad_buckets *b, nd_comm *comm, size_t n, size_t bucket_floats, int layers,
                            nd_error *err);
void nd_buckets_free(nd_grad_buckets *b);

/* Before backward: grad[final_from, end) is final already (the running
 * statistics and the loss tail written by forward); end = one past the
 * last float to sum. */
void nd_buckets_begin(nd_grad_buckets *b, float *grad, size_t final_from, size_t end);

/* The model's grad_ready hook (ctx: the nd_grad_buckets): grad[lo, ..) is
 * final. Starts a bucket when enough is final and lets MPI progress the
 * ones in flight. Collective in effect: every rank makes the same calls. */
void nd_buckets_ready(void *ctx, size_t lo);

/* After backward: sends what is left and waits for every bucket. */
nd_status nd_buckets_finish(nd_grad_buckets *b, nd_error *err);

#endif
