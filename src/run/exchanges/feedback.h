/* What the compressed exchanges (topk.c, powersgd.c) share: the error
 * feedback's residual and the count of bytes sent. Each one's state begins
 * with an nd_feedback, so tests can read the residual of either.
 *
 * The residual is in the units of the gradient the exchange is given: the
 * sum over this rank's batch of the per-sample gradients, before the
 * optimizer's 1/global-batch and its learning rate. So a schedule that
 * changes the rate does not rescale what is owed (as DGC and PowerSGD keep
 * it in gradient units); the batch is fixed for a run, so the sum is the
 * mean times a constant. Each step: a = g + e; c = C(a) is sent; e = a - c.
 * It is not checkpointed: a resumed run starts it (and PowerSGD's Q) afresh,
 * so resuming these exchanges is not bit-exact (docs/training.md). */
#ifndef NNDIST_FEEDBACK_H
#define NNDIST_FEEDBACK_H

#include <stddef.h>

#include "../exchange.h"

typedef struct {
    float *residual; /* (len) e for grad[lo, lo + len): the trainable part but a frozen base */
    size_t lo, len;
    long long bytes; /* sent by this rank so far */
} nd_feedback;

/* The residual of a top-k or PowerSGD exchange's state (self). */
static inline const float *nd_feedback_residual(const void *self) { return ((const nd_feedback *)self)->residual; }

/* Either part's wire_bytes hook: the bytes its state (self) counted. */
static inline long long nd_feedback_wire_bytes(const void *self, const nd_exchange_env *env) {
    (void)env;
    return ((const nd_feedback *)self)->bytes;
}

#endif
