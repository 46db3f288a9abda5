#include "nndist/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *alloc_aligned_zeroed(size_t bytes) {
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t rounded = (bytes + ND_ALIGN - 1) / ND_ALIGN * ND_ALIGN;
    if (rounded == 0) rounded = ND_ALIGN;
    void *p = aligned_alloc(ND_ALIGN, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

float *nd_buffer_alloc(size_t n) {
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return alloc_aligned_zeroed(n * sizeof(float));
}

double *nd_buffer_alloc_f64(size_t n) {
    if (n > SIZE_MAX / sizeof(double)) return NULL;
    return alloc_aligned_zeroed(n * sizeof(double));
}

int *nd_buffer_alloc_i32(size_t n) {
    if (n > SIZE_MAX / sizeof(int)) return NULL;
    return alloc_aligned_zeroed(n * sizeof(int));
}

void nd_buffer_free(void *p) { free(p); }

nd_span nd_span_reserve(size_t *total, size_t length) {
    const size_t per_line = ND_ALIGN / sizeof(float);
    nd_span s;
    s.offset = (*total + per_line - 1) / per_line * per_line;
    s.length = length;
    *total = s.offset + length;
    return s;
}
