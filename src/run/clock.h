/* The phase clock of a sync step: the seconds since the last tick go to the
 * phase named (nd_phase: data, forward, backward, wait, comm, update). */
#ifndef NNDIST_CLOCK_H
#define NNDIST_CLOCK_H

#include "nndist/comm.h"
#include "nndist/train.h"

typedef struct {
    double t0;     /* time of the last tick (nd_comm_time) */
    double *phase; /* (ND_PHASES) seconds accumulated per phase */
} nd_clock;

static inline void nd_clock_start(nd_clock *c, double *phase) {
    c->t0 = nd_comm_time();
    c->phase = phase;
}

static inline void nd_clock_tick(nd_clock *c, nd_phase p) {
    const double now = nd_comm_time();
    c->phase[p] += now - c->t0;
    c->t0 = now;
}

#endif
