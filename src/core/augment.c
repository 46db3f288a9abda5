/* Data augmentation (augment.h). */
#include "nndist/augment.h"

#include <math.h>
#include <string.h>

#include "nndist/rng.h"

/* The augmentation streams, apart from every other stream of the run. */
#define AUGMENT_STREAM 0xa06u
#define MIXUP_STREAM 0xa07u

int nd_augment_per_sample(const nd_augment_config *a) {
    return a->crop_pad > 0 || a->flip || a->cutout > 0 || a->noise > 0.0f;
}

void nd_augment_sample(float *x, float *scratch, int cols, nd_image_shape shape, const nd_augment_config *a,
                       uint64_t seed, int epoch, long sample) {
    nd_rng rng;
    nd_rng_seed(&rng, seed, (uint64_t)AUGMENT_STREAM << 32 | (uint32_t)epoch, (uint64_t)sample);
    const int h = shape.h, w = shape.w, p = a->crop_pad;
    /* Every draw is made whether or not its transform is on, so turning
     * one on does not change the others' draws. */
    const int dy = p > 0 ? (int)nd_rng_below(&rng, 2 * (uint64_t)p + 1) - p : 0;
    const int dx = p > 0 ? (int)nd_rng_below(&rng, 2 * (uint64_t)p + 1) - p : 0;
    const int flip = a->flip && (nd_rng_next(&rng) >> 63);
    if (shape.c > 0 && (dy || dx || flip)) {
        /* out[y][x] = in[y + dy][x' + dx] with x' = x or w-1-x: the crop of
         * the padded image, then the mirror (the peer's order). */
        memcpy(scratch, x, sizeof(float) * (size_t)cols);
        for (int c = 0; c < shape.c; ++c)
            for (int y = 0; y < h; ++y) {
                float *out = x + ((size_t)c * h + y) * w;
                const int sy = y + dy;
                if (sy < 0 || sy >= h) {
                    memset(out, 0, sizeof(float) * (size_t)w);
                    continue;
                }
                const float *in = scratch + ((size_t)c * h + sy) * w;
                for (int xo = 0; xo < w; ++xo) {
                    const int sx = (flip ? w - 1 - xo : xo) + dx;
                    out[xo] = sx >= 0 && sx < w ? in[sx] : 0.0f;
                }
            }
    }
    if (shape.c > 0 && a->cutout > 0) {
        const int cy = (int)nd_rng_below(&rng, (uint64_t)h), cx = (int)nd_rng_below(&rng, (uint64_t)w);
        const int y0 = cy - a->cutout / 2 > 0 ? cy - a->cutout / 2 : 0,
                  x0 = cx - a->cutout / 2 > 0 ? cx - a->cutout / 2 : 0;
        const int y1 = cy - a->cutout / 2 + a->cutout < h ? cy - a->cutout / 2 + a->cutout : h;
        const int x1 = cx - a->cutout / 2 + a->cutout < w ? cx - a->cutout / 2 + a->cutout : w;
        for (int c = 0; c < shape.c; ++c)
            for (int y = y0; y < y1; ++y)
                if (x1 > x0) memset(x + ((size_t)c * h + y) * w + x0, 0, sizeof(float) * (size_t)(x1 - x0));
    }
    if (a->noise > 0.0f)
        for (int i = 0; i < cols; ++i) x[i] += a->noise * (float)nd_rng_normal(&rng);
}

/* Gamma(shape, 1) by Marsaglia & Tsang (2000); shape < 1 through
 * Gamma(shape + 1) * U^(1/shape). */
static double gamma_draw(nd_rng *rng, double shape) {
    if (shape < 1.0) {
        const double u = nd_rng_uniform(rng);
        return gamma_draw(rng, shape + 1.0) * pow(u > 0.0 ? u : 1e-300, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double z, v;
        do {
            z = nd_rng_normal(rng);
            v = 1.0 + c * z;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = nd_rng_uniform(rng);
        if (u < 1.0 - 0.0331 * z * z * z * z || log(u) < 0.5 * z * z + d * (1.0 - v + log(v))) return d * v;
    }
}

void nd_mixup_batch(float *x, int cols, float *t, int k, float *lam, const long *row_ids, int batch, float alpha,
                    uint64_t seed, int epoch) {
    for (int i = 0; i < batch; ++i) {
        nd_rng rng;
        nd_rng_seed(&rng, seed, (uint64_t)MIXUP_STREAM << 32 | (uint32_t)epoch, (uint64_t)row_ids[i]);
        const double g1 = gamma_draw(&rng, alpha), g2 = gamma_draw(&rng, alpha);
        lam[i] = g1 + g2 > 0.0 ? (float)(g1 / (g1 + g2)) : 0.5f;
    }
    for (int i = 0, j = batch - 1; i < j; ++i, --j) { /* both rows from the originals */
        float *a = x + (size_t)i * cols, *b = x + (size_t)j * cols;
        const float li = lam[i], lj = lam[j];
        for (int c = 0; c < cols; ++c) {
            const float u = a[c], v = b[c];
            a[c] = li * u + (1.0f - li) * v;
            b[c] = lj * v + (1.0f - lj) * u;
        }
        if (!t) continue;
        float *ta = t + (size_t)i * k, *tb = t + (size_t)j * k;
        for (int c = 0; c < k; ++c) {
            const float u = ta[c], v = tb[c];
            ta[c] = li * u + (1.0f - li) * v;
            tb[c] = lj * v + (1.0f - lj) * u;
        }
    }
    if (batch % 2) lam[batch / 2] = 1.0f;
}
