/* The plain sync exchange: after backward, one in-place allreduce of the
 * whole gradient buffer (but a frozen base's prefix), the step's loss and
 * hit count riding in its tail. */
#include "../exchange.h"

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

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    (void)self;
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    /* Blocking collectives have no time limit of their own: the watchdog's
     * thread times them. */
    nd_watchdog_enter(env->watchdog, "the gradient allreduce (every rank had arrived)", step + 1);
    const nd_model *m = env->model;
    const nd_status st = nd_comm_allreduce_sum_f32(env->comm, m->grad + env->lo, m->num_params + env->tail - env->lo,
                                                   err);
    nd_watchdog_leave(env->watchdog);
    return st;
}

const nd_exchange_part nd_exchange_allreduce = {
    .caps = {.name = "allreduce",
             .chosen_by = "--mode sync",
             .sync_bn = true,
             .skip_step = true,
             .whole_replica = true,
             .streams = true,
             .freezes = true},
    .reduce = reduce,
};
