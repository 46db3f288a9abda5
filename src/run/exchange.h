/* Exchanges: how a sync step's gradients become the same update on every
 * rank. Each is one part behind this ops table, in its own file under
 * exchanges/, chosen once at setup from the plan (nd_train_plan.exchange)
 * through nd_exchange_parts. The training loop calls the table and knows
 * no exchange by name. A new exchange is one file defining its part and one
 * entry in nd_exchange_parts (exchange.c); its capabilities (which options
 * pick it, which it supports) are declared in the part, and plan.c reads
 * them.
 *
 * Every function but reduce may be NULL: the loop then does the plain
 * thing (no buffers, no hooks, penalties over the whole gradient, nothing
 * after the update); the parameter servers' part has capabilities only,
 * since async.c drives them. Calls marked collective are made by every
 * rank in the same order. None allocates after create. */
#ifndef NNDIST_EXCHANGE_H
#define NNDIST_EXCHANGE_H

#include "nndist/comm.h"
#include "nndist/model.h"
#include "nndist/optim.h"
#include "nndist/plan.h"
#include "clock.h"
#include "penalty.h"
#include "nndist/watchdog.h"

/* What an exchange works on, fixed at setup. */
typedef struct {
    nd_model *model; /* its grad arena is what the exchange sums; param what it completes */
    nd_comm *comm;
    nd_watchdog *watchdog; /* times the blocking collectives (NULL: none) */
    const nd_penalty *penalty;
    const nd_train_config *cfg;
    int rank, size;
    size_t tail; /* floats after num_params that ride along (the loss and hit count) */
    size_t lo;   /* grad[0, lo) is a frozen base's (--freeze): never sent, stays 0 */
    /* Set after the optimizer exists, for exchanges that act on its state
     * and on epoch ends (--mode local); NULL / 0 before. */
    nd_optimizer *opt;
    long steps_per_epoch;
} nd_exchange_env;

typedef struct {
    nd_exchange_caps caps;
    /* Allocates what the exchange needs into *self (may stay NULL). */
    nd_status (*create)(void **self, const nd_exchange_env *env, nd_error *err);
    void (*destroy)(void *self);
    /* The span of the arena this rank updates and keeps optimizer state
     * for (NULL: all of it). */
    nd_span (*slice)(const void *self, const nd_exchange_env *env);
    /* Before a micro-batch's forward: hooks for the pass (overlap). */
    void (*attach)(void *self, const nd_exchange_env *env, nd_train_pass *pass);
    /* After a micro-batch's forward: the statistics and the loss tail are final. */
    void (*forward_done)(void *self, const nd_exchange_env *env);
    /* After a micro-batch's backward: fold model.grad into the step's sum. */
    void (*accumulate)(void *self, const nd_exchange_env *env);
    /* Collective: model.grad becomes the sum over ranks of the step (of this
     * rank's slice of it, where the exchange slices). Ticks the clock's
     * wait phase where it waits for the slowest rank first. */
    nd_status (*reduce)(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err);
    /* Collective where it needs a norm over ranks: penalties and clipping of
     * the reduced gradient; *scale for the optimizer, *clip the global norms
     * before and after clipping (always: the numerical guard's evidence
     * where the gradient is sliced) and whether clipping fired on any rank.
     * NULL: penalties over the whole gradient on each rank. */
    nd_status (*scale)(void *self, const nd_exchange_env *env, long step, int samples, float *scale,
                       nd_clip_figures *clip, nd_error *err);
    /* 1 when the reduced step cannot be applied for a reason only the
     * exchange knows (a fixed-point value out of range), said in what. */
    int (*bad_step)(const void *self, char *what, size_t cap);
    /* Collective: after the optimizer updated this rank's slice. */
    nd_status (*after_update)(void *self, const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err);
    /* Messages started in the run so far, for the summary (0: not counted). */
    long (*messages)(const void *self);
    /* Bytes this rank sent in the run so far, counted as the algorithm
     * moves them (a ring allreduce of n floats: 2 (p-1)/p n 4); the
     * summary's bytes_per_step divides by the steps. NULL: not known. */
    long long (*wire_bytes)(const void *self, const nd_exchange_env *env);
} nd_exchange_part;

/* The part of each exchange (NULL for the parameter servers, which run
 * their own driver: async.c). */
extern const nd_exchange_part *const nd_exchange_parts[ND_EXCHANGES];

/* One exchange in use: its part, its state and what it works on. */
typedef struct {
    const nd_exchange_part *part;
    void *self;
    nd_exchange_env env;
} nd_exchange;

extern const nd_exchange_part nd_exchange_allreduce, nd_exchange_buckets, nd_exchange_zero, nd_exchange_fixed_point,
    nd_exchange_param_server, nd_exchange_wire16, nd_exchange_topk, nd_exchange_powersgd, nd_exchange_local;

/* The arrival barrier before a blocking exchange (allreduce.c): splits the
 * wait for the slowest rank (ticked as the wait phase) from the transfer,
 * and names a rank that never arrives. Collective; nothing on one rank. */
nd_status nd_exchange_arrive(const nd_exchange_env *env, long step, nd_clock *clock, nd_error *err);

/* The bytes one rank sends in a ring allreduce of n values of `width`
 * bytes over `ranks` ranks: 2 (ranks-1)/ranks n width (allreduce.c). */
long long nd_ring_allreduce_bytes(size_t n, size_t width, int ranks);

#endif
