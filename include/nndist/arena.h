/* Flat, 64-byte aligned float buffers and the spans that view into them.
 *
 * Parameters, gradients and each optimizer state live in one buffer of n
 * floats apiece; a layer only owns {offset, length} spans. Zeroing,
 * allreduce, clipping, the optimizer step and checkpointing are then one
 * loop or one call over the whole buffer, whatever the layer types. */
#ifndef NNDIST_ARENA_H
#define NNDIST_ARENA_H

#include <stddef.h>

#define ND_ALIGN 64

typedef struct {
    size_t offset; /* in floats, from the start of the buffer */
    size_t length; /* in floats */
} nd_span;

/* Returns a zeroed buffer of n floats aligned to ND_ALIGN bytes, or NULL.
 * n may be 0 (a valid, freeable pointer is still returned). */
float *nd_buffer_alloc(size_t n);

/* Same for doubles and ints, for workspaces that need them. */
double *nd_buffer_alloc_f64(size_t n);
int *nd_buffer_alloc_i32(size_t n);

void nd_buffer_free(void *p);

/* Reserves `length` floats at the end of a layout being sized, rounding the
 * offset up so every span starts on an ND_ALIGN boundary. *total grows. */
nd_span nd_span_reserve(size_t *total, size_t length);

#endif
