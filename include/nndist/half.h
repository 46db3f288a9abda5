/* 16-bit floating point for the wire: IEEE binary16 (fp16: 1 sign, 5
 * exponent, 10 mantissa bits; largest finite 65504) and bfloat16 (bf16:
 * the top half of a float: 8 exponent bits, 7 mantissa bits, fp32's
 * range). Conversions from float round to nearest, ties to even; a value
 * beyond the format's range becomes infinity (with its sign), a NaN stays
 * a (quiet) NaN; conversions to float are exact. Written with integer and
 * float operations only (no branches, no F16C instructions), so that the
 * array loops vectorize on any x86-64 and give the same bits everywhere. */
#ifndef NNDIST_HALF_H
#define NNDIST_HALF_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ND_HALF_FP16, ND_HALF_BF16 } nd_half_kind;

uint16_t nd_f32_to_fp16(float f);
float nd_fp16_to_f32(uint16_t h);
uint16_t nd_f32_to_bf16(float f);
float nd_bf16_to_f32(uint16_t h);

/* out[i] = the 16-bit value of in[i] * scale (n each; the product is
 * rounded to float first, exact when scale is a power of two). */
void nd_half_from_f32(nd_half_kind kind, uint16_t *out, const float *in, float scale, size_t n);
/* out[i] = in[i] * scale as floats (n each). Returns 1 when every value
 * was finite, 0 when one was an infinity or a NaN (an overflow). */
int nd_half_to_f32(nd_half_kind kind, float *out, const uint16_t *in, float scale, size_t n);
/* The sum of parts blocks of in, each n values at a stride of `stride`
 * (in[b * stride + i], b = 0..parts-1), added in float in block order and
 * rounded once: out[i] (n). */
void nd_half_sum(nd_half_kind kind, uint16_t *out, const uint16_t *in, size_t n, size_t stride, int parts);

#endif
