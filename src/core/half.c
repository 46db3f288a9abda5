/* fp16 and bf16 conversions (nndist/half.h). The fp16 pair follows the
 * branch-free method of Maratyszcza's FP16 library: the float unit does
 * the rounding (to nearest even, the default mode), scaled so that the
 * bits it rounds away are exactly those fp16 drops, normals and
 * subnormals alike. */
#include "nndist/half.h"

#include <string.h>

static inline uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* All ones when c holds, else 0: selects without branches, so that the
 * array loops vectorize. */
static inline uint32_t mask_if(int c) { return -(uint32_t)(c != 0); }

uint16_t nd_f32_to_fp16(float f) {
    const float to_inf = 0x1.0p+112f, to_zero = 0x1.0p-110f;
    /* Beyond fp16's range the first product is infinite; in range, the
     * pair rounds the magnitude to the 11 significant bits of its fp16
     * exponent once the bias below is added. */
    float base = (__builtin_fabsf(f) * to_inf) * to_zero;
    const uint32_t w = bits_of(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    const uint32_t small = mask_if(bias < 0x71000000u); /* subnormal fp16: a fixed quantum of 2^-24 */
    bias = (bias & ~small) | (0x71000000u & small);
    base = float_of((bias >> 1) + 0x07800000u) + base;
    const uint32_t b = bits_of(base);
    const uint32_t nonsign = ((b >> 13) & 0x00007C00u) + (b & 0x00000FFFu);
    const uint32_t nan = mask_if(shl1_w > 0xFF000000u);
    return (uint16_t)((sign >> 16) | (0x7E00u & nan) | (nonsign & ~nan));
}

float nd_fp16_to_f32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    /* Normals (and inf/NaN): move the exponent and mantissa into place and
     * rebias by a multiplication; subnormals: through a magic 0.5. */
    const float normalized = float_of((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = float_of((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t sub = mask_if(two_w < (1u << 27));
    return float_of(sign | (bits_of(denormalized) & sub) | (bits_of(normalized) & ~sub));
}

uint16_t nd_f32_to_bf16(float f) {
    const uint32_t u = bits_of(f);
    /* Adding 0x7FFF plus the lowest kept bit rounds the dropped half to
     * nearest, ties to the even kept value; a NaN only keeps its top bits
     * and is made quiet so that it cannot become an infinity. */
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = mask_if((u & 0x7FFFFFFFu) > 0x7F800000u);
    return (uint16_t)((((u >> 16) | 0x0040u) & nan) | (rounded & ~nan));
}

float nd_bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

void nd_half_from_f32(nd_half_kind kind, uint16_t *restrict out, const float *restrict in, float scale, size_t n) {
    if (kind == ND_HALF_FP16)
        for (size_t i = 0; i < n; ++i) out[i] = nd_f32_to_fp16(in[i] * scale);
    else
        for (size_t i = 0; i < n; ++i) out[i] = nd_f32_to_bf16(in[i] * scale);
}

int nd_half_to_f32(nd_half_kind kind, float *restrict out, const uint16_t *restrict in, float scale, size_t n) {
    /* The exponent bits all set is an infinity or a NaN in either format. */
    const uint16_t top = kind == ND_HALF_FP16 ? 0x7C00u : 0x7F80u;
    int finite = 1;
    if (kind == ND_HALF_FP16)
        for (size_t i = 0; i < n; ++i) out[i] = nd_fp16_to_f32(in[i]) * scale, finite &= (in[i] & top) != top;
    else
        for (size_t i = 0; i < n; ++i) out[i] = nd_bf16_to_f32(in[i]) * scale, finite &= (in[i] & top) != top;
    return finite;
}

void nd_half_sum(nd_half_kind kind, uint16_t *restrict out, const uint16_t *restrict in, size_t n, size_t stride,
                 int parts) {
    enum { CHUNK = 1024 }; /* floats of the running sums, on the stack */
    float acc[CHUNK];
    for (size_t lo = 0; lo < n; lo += CHUNK) {
        const size_t len = n - lo < CHUNK ? n - lo : CHUNK;
        nd_half_to_f32(kind, acc, in + lo, 1.0f, len);
        for (int b = 1; b < parts; ++b) {
            const uint16_t *src = in + (size_t)b * stride + lo;
            if (kind == ND_HALF_FP16)
                for (size_t i = 0; i < len; ++i) acc[i] += nd_fp16_to_f32(src[i]);
            else
                for (size_t i = 0; i < len; ++i) acc[i] += nd_bf16_to_f32(src[i]);
        }
        nd_half_from_f32(kind, out + lo, acc, 1.0f, len);
    }
}
