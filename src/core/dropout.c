/* Inverted dropout (Srivastava et al. 2014) with masks that depend only on
 * (seed, stream, sample), never on which rank draws them. */
#include "nndist/layers.h"
#include "nndist/rng.h"

void nd_dropout_forward(float *out, float *mask, const float *x, int batch, int n, float p, uint64_t seed,
                        uint64_t stream, const long *row_ids) {
    const float scale = 1.0f / (1.0f - p);
    /* Compare 53-bit uniforms against p in integer form: one draw per unit. */
    const uint64_t cut = (uint64_t)((double)p * 9007199254740992.0);
    for (int i = 0; i < batch; ++i) {
        nd_rng rng;
        nd_rng_seed(&rng, seed, stream, (uint64_t)(row_ids ? row_ids[i] : i));
        float *m = mask + (size_t)i * n, *o = out + (size_t)i * n;
        const float *r = x + (size_t)i * n;
        for (int j = 0; j < n; ++j) {
            m[j] = (nd_rng_next(&rng) >> 11) >= cut ? scale : 0.0f;
            o[j] = r[j] * m[j];
        }
    }
}
