/* The plain sync exchange: after backward, one in-place allreduce of the
 * whole gradient buffer (but a frozen base's prefix), the step's loss and
 * hit count riding in its tail. */
#include <stdlib.h>

#include "../exchange.h"

typedef struct {
    long long sent; /* bytes this rank sent in the run (the summary's bytes_per_step) */
} allreduce;

/* The barrier splits the exchange's time in two, as Horovod's timeline
 * separates negotiation from the allreduce; it costs one latency
 * (microseconds). */
nd_status nd_exchange_arrive(const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    if (env->size > 1) {
        ND_TRY(nd_comm_arrive(env->comm, step + 1, "gradient exchange", err));
        nd_clock_tick(clock, ND_PHASE_WAIT);
    }
    return ND_OK;
}

long long nd_ring_allreduce_bytes(size_t n, size_t width, int ranks) {
    return ranks > 1 ? (long long)(2 * (size_t)(ranks - 1) * n * width / (size_t)ranks) : 0;
}

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    (void)env;
    if (!(*self = calloc(1, sizeof(allreduce)))) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the allreduce");
    return ND_OK;
}

static void destroy(void *self) { free(self); }

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    /* Blocking collectives have no time limit of their own: the watchdog's
     * thread times them. */
    nd_watchdog_enter(env->watchdog, "the gradient allreduce (every rank had arrived)", step + 1);
    const nd_model *m = env->model;
    const size_t n = m->num_params + env->tail - env->lo;
    const nd_status st = nd_comm_allreduce_sum_f32(env->comm, m->grad + env->lo, n, err);
    nd_watchdog_leave(env->watchdog);
    ((allreduce *)self)->sent += nd_ring_allreduce_bytes(n, sizeof(float), env->size);
    return st;
}

static long long wire_bytes(const void *self, const nd_exchange_env *env) {
    (void)env;
    return ((const allreduce *)self)->sent;
}

const nd_exchange_part nd_exchange_allreduce = {
    .caps = {.name = "allreduce",
             .chosen_by = "--mode sync",
             .sync_bn = true,
             .skip_step = true,
             .whole_replica = true,
             .streams = true,
             .freezes = true},
    .create = create,
    .destroy = destroy,
    .reduce = reduce,
    .wire_bytes = wire_bytes,
};
