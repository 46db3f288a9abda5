#include "nndist/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void nd_rng_seed(nd_rng *rng, uint64_t seed, uint64_t stream_a, uint64_t stream_b) {
    uint64_t x = seed;
    x = splitmix64(&x) ^ (stream_a * 0xD1B54A32D192ED03ull);
    x = splitmix64(&x) ^ (stream_b * 0x8CB92BA72F3D8DD7ull);
    for (int i = 0; i < 4; ++i) rng->s[i] = splitmix64(&x);
}

uint64_t nd_rng_next(nd_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double nd_rng_uniform(nd_rng *rng) { return (double)(nd_rng_next(rng) >> 11) * 0x1.0p-53; }

uint64_t nd_rng_below(nd_rng *rng, uint64_t bound) {
    /* Rejection sampling: drop the top partial range. */
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = nd_rng_next(rng);
    while (r >= limit);
    return r % bound;
}

double nd_rng_normal(nd_rng *rng) {
    double u1 = nd_rng_uniform(rng);
    double u2 = nd_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void nd_rng_shuffle_i32(nd_rng *rng, int *idx, size_t n) {
    for (size_t i = n; i > 1; --i) {
        size_t j = (size_t)nd_rng_below(rng, i);
        int t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
