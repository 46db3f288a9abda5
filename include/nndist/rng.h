/* Seeded pseudo-random numbers (xoshiro256**), state held by the caller.
 *
 * Streams are derived from (seed, a, b) by splitmix64 so that, e.g., the
 * shuffle of epoch e on rank r is a pure function of (seed, e, r): a run can
 * be reproduced or resumed without replaying earlier draws. */
#ifndef NNDIST_RNG_H
#define NNDIST_RNG_H

#include <stdint.h>
#include <stddef.h>

typedef struct {
    uint64_t s[4];
} nd_rng;

/* Seeds a stream identified by (seed, stream_a, stream_b). */
void nd_rng_seed(nd_rng *rng, uint64_t seed, uint64_t stream_a, uint64_t stream_b);

uint64_t nd_rng_next(nd_rng *rng);

/* Uniform double in [0, 1). */
double nd_rng_uniform(nd_rng *rng);

/* Uniform integer in [0, bound), bound > 0, without modulo bias. */
uint64_t nd_rng_below(nd_rng *rng, uint64_t bound);

/* Standard normal deviate (Box-Muller; no cached second value so the state
 * alone defines the stream). */
double nd_rng_normal(nd_rng *rng);

/* Fisher-Yates shuffle of idx (n). */
void nd_rng_shuffle_i32(nd_rng *rng, int *idx, size_t n);

#endif
