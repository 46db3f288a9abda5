/* The plain sync exchange: after backward, one in-place allreduce of the
 * whole gradient buffer (but a frozen base's prefix), the step's loss and
 * hit count riding in its tail. When every rank is on one node, the
 * gradient buffer itself lives in memory the ranks share and the sum is
 * the node's shared-memory sum (nd_node_sum: each rank adds up its share
 * of every rank's buffer, in place, no messages); elsewhere MPI_Allreduce. */
#include <stdlib.h>
#include <string.h>

#include "../exchange.h"

/* The shared-memory way: the model's gradient buffer is lent to the
 * node's shared window for the run and given back at destroy. */
typedef struct {
    nd_node_sum *sum; /* NULL: MPI_Allreduce (ranks on several nodes, or one rank) */
    nd_model *model;
    float *own_grad; /* the model's own buffer, back at destroy */
    size_t floats;   /* the model's whole buffer: num_params + ND_GRAD_TAIL */
    long long sent;  /* bytes this rank sent in the run, counted as a ring allreduce moves them */
} node_state;

static nd_status create(void **self, const nd_exchange_env *env, nd_error *err) {
    node_state *ns = *self = calloc(1, sizeof *ns);
    if (!ns) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the allreduce exchange");
    if (env->size < 2) return ND_OK;
    nd_model *m = env->model;
    const size_t floats = m->num_params + ND_GRAD_TAIL;
    ND_TRY(nd_node_sum_create(env->comm, floats, &ns->sum, err));
    if (!ns->sum) return ND_OK; /* ranks on several nodes: MPI_Allreduce */
    ns->model = m, ns->own_grad = m->grad, ns->floats = floats;
    float *shared = nd_node_sum_buffer(ns->sum);
    memcpy(shared, m->grad, sizeof(float) * floats);
    m->grad = shared; /* tensors are offsets into it: nothing else moves */
    return ND_OK;
}

static void destroy(void *self) {
    node_state *ns = self;
    if (!ns) return;
    if (ns->sum) {
        memcpy(ns->own_grad, ns->model->grad, sizeof(float) * ns->floats);
        ns->model->grad = ns->own_grad;
        nd_node_sum_free(ns->sum);
    }
    free(ns);
}

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

static nd_status reduce(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err) {
    node_state *ns = self;
    const nd_model *m = env->model;
    const size_t n = m->num_params + env->tail - env->lo;
    ns->sent += nd_ring_allreduce_bytes(n, sizeof(float), env->size);
    if (ns->sum) { /* its waits time out on their own: no watchdog needed */
        ND_TRY(nd_node_sum_arrive(ns->sum, step + 1, "gradient exchange", err));
        nd_clock_tick(clock, ND_PHASE_WAIT);
        return nd_node_sum_reduce(ns->sum, env->lo, env->model->num_params + env->tail, step + 1, err);
    }
    ND_TRY(nd_exchange_arrive(env, step, clock, err));
    /* Blocking collectives have no time limit of their own: the watchdog's
     * thread times them. */
    nd_watchdog_enter(env->watchdog, "the gradient allreduce (every rank had arrived)", step + 1);
    const nd_status st = nd_comm_allreduce_sum_f32(env->comm, m->grad + env->lo, n, err);
    nd_watchdog_leave(env->watchdog);
    return st;
}

static long long wire_bytes(const void *self, const nd_exchange_env *env) {
    (void)env;
    return ((const node_state *)self)->sent;
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
