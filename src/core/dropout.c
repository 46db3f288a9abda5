/* Inverted dropout (Srivastava et al. 2014) with masks that depend only on
 * (seed, stream, sample), never on which rank draws them. */
#include "nndist/layers.h"
#include "nndist/rng.h"

void nd_dropconnect_forward(float *masked, float *mask, const float *w, int rows, int cols, float p, uint64_t seed,
                            uint64_t stream) {
    const float scale = 1.0f / (1.0f - p);
    const uint64_t cut = (uint64_t)((double)p * 9007199254740992.0);
    for (int r = 0; r < rows; ++r) {
        nd_rng rng;
        nd_rng_seed(&rng, seed, stream, (uint64_t)r);
        const size_t o = (size_t)r * cols;
        for (int j = 0; j < cols; ++j) {
            mask[o + j] = (nd_rng_next(&rng) >> 11) >= cut ? scale : 0.0f;
            masked[o + j] = w[o + j] * mask[o + j];
        }
    }
}

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
