/* --deterministic's exchange: each micro-batch gradient is turned into
 * 64-bit fixed point (2^-32 resolution) and added into an integer
 * accumulator; the accumulators are summed by an integer allreduce, which
 * is exact in any order, so the step's sum does not depend on the rank
 * count (the blocks feed supplies the same micro-batches whoever owns
 * them: feeds/blocks.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../exchange.h"

#define FIX_ONE 4294967296.0 /* 2^32: fixed-point unit */

typedef struct {
    long long *acc;    /* (num_params + tail + 1) the step's sum; the last slot flags trouble */
    long long trouble; /* this rank's micro-batches of the step had a value out of range or not finite */
    int bad;           /* the latest reduced step flagged trouble somewhere */
    double limit;      /* the range checked: |g| < limit */
} fixed_point;

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    fixed_point *f = *self = calloc(1, sizeof *f);
    if (!f || !(f->acc = calloc(env->model->num_params + env->tail + 1, sizeof(long long))))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the fixed-point gradient");
    /* Any one micro-batch value must leave room for M of them in 63 bits. */
    f->limit = ldexp(1.0, 62) / FIX_ONE / env->cfg->micro_batches;
    return ND_OK;
}

static void destroy(void *self) {
    fixed_point *f = self;
    if (f) free(f->acc);
    free(f);
}

/* One vectorizable pass for the range check (a NaN makes `ok` 0), then the
 * conversion: llrint rounds to nearest even in the default rounding mode
 * on every rank; built with -fno-math-errno it is one instruction, not a
 * libm call. */
static void accumulate(void *self, const nd_exchange_env *env) {
    fixed_point *f = self;
    const size_t used = env->model->num_params + env->tail;
    const float *g = env->model->grad;
    int ok = 1;
    for (size_t i = 0; i < used; ++i) ok &= fabsf(g[i]) < (float)f->limit;
    if (!ok) {
        f->trouble = 1;
        return;
    }
    long long *restrict acc = f->acc;
    for (size_t i = 0; i < used; ++i) acc[i] += llrint((double)g[i] * FIX_ONE);
}

/* No arrival barrier: the watchdog times the exchange (--timeout). */
static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    (void)clock;
    fixed_point *f = self;
    nd_model *m = env->model;
    const size_t used = m->num_params + env->tail;
    f->acc[used] = f->trouble;
    nd_watchdog_enter(env->watchdog, "the deterministic gradient allreduce", step + 1);
    const nd_status exchanged = nd_comm_allreduce_sum_i64(env->comm, f->acc, used + 1, err);
    nd_watchdog_leave(env->watchdog);
    ND_TRY(exchanged);
    /* The numerical guard decides what a bad step means; the sum is
     * meaningless then and is not converted. */
    f->bad = f->acc[used] != 0;
    if (!f->bad) {
        const double unit = 1.0 / FIX_ONE; /* a power of two: the product is exact before rounding to float */
        for (size_t i = 0; i < used; ++i) m->grad[i] = (float)((double)f->acc[i] * unit);
    }
    /* The next step starts from zero. */
    memset(f->acc, 0, sizeof(long long) * (used + 1));
    f->trouble = 0;
    return ND_OK;
}

static int bad_step(const void *self, char *what, size_t cap) {
    const fixed_point *f = self;
    if (!f->bad) return 0;
    snprintf(what, cap, "a gradient value is not finite or beyond --deterministic's fixed-point range (|g| < %.3g)",
             f->limit);
    return 1;
}

static bool chosen(const nd_train_config *c) { return c->deterministic; }

const nd_exchange_part nd_exchange_fixed_point = {
    /* deterministic mode normalizes each fixed micro-batch and reads fixed blocks */
    .caps = {.name = "fixed-point sum",
             .chosen_by = "--deterministic",
             .chosen = chosen,
             .sync_bn = false,
             .skip_step = true,
             .whole_replica = true,
             .streams = false},
    .create = create,
    .destroy = destroy,
    .accumulate = accumulate,
    .reduce = reduce,
    .bad_step = bad_step,
};
