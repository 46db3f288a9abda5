/* ZeRO stage 1 (--shard-optimizer, Rajbhandari et al. 2020): each rank keeps
 * the optimizer state of one slice of the arena only (the same split as the
 * parameter servers': nd_shard_range over the arena). A step reduce-scatters
 * the trainable gradient so each rank holds the sum of its own slice,
 * updates that slice, and allgathers the parameters. The running
 * statistics and the step's loss tail are few floats and are allreduced
 * whole, so every replica updates them as in plain sync mode. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/sched.h"
#include "train_internal.h"

struct nd_zero {
    int *rs_counts;   /* (size) floats of the trainable prefix each rank sums */
    int *counts;      /* (size) each rank's slice of the arena, for the allgather */
    int *displs;      /* (size) and where it starts */
    float *slice_sum; /* (this rank's rs count) where the reduce-scatter lands */
};

nd_status nd_zero_create(nd_trainer *tr, nd_error *err) {
    const int size = tr->size;
    const size_t n = tr->model.num_params, t = tr->model.num_trainable;
    if (n > (size_t)INT32_MAX) return ND_FAIL(err, ND_ERR_ARG, "--shard-optimizer: %zu parameters is too many", n);
    nd_zero *z = tr->zero = calloc(1, sizeof *z);
    if (!z || !(z->rs_counts = calloc((size_t)size, sizeof(int))) || !(z->counts = calloc((size_t)size, sizeof(int))) ||
        !(z->displs = calloc((size_t)size, sizeof(int))))
        return ND_FAIL(err, ND_ERR_NOMEM, "--shard-optimizer: cannot allocate the slice table");
    for (int r = 0; r < size; ++r) {
        long off, len;
        nd_shard_range((long)n, r, size, &off, &len);
        z->counts[r] = (int)len, z->displs[r] = (int)off;
        const size_t a = (size_t)off < t ? (size_t)off : t, b = (size_t)(off + len) < t ? (size_t)(off + len) : t;
        z->rs_counts[r] = (int)(b - a);
    }
    if (!(z->slice_sum = nd_buffer_alloc((size_t)z->rs_counts[tr->rank] + 1)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--shard-optimizer: cannot allocate the gradient slice");
    return ND_OK;
}

void nd_zero_free(nd_trainer *tr) {
    nd_zero *z = tr->zero;
    if (!z) return;
    free(z->rs_counts), free(z->counts), free(z->displs);
    nd_buffer_free(z->slice_sum);
    free(z);
    tr->zero = NULL;
}

nd_status nd_zero_reduce(nd_trainer *tr, nd_error *err) {
    nd_zero *z = tr->zero;
    nd_model *m = &tr->model;
    const size_t t = m->num_trainable;
    ND_TRY(nd_comm_allreduce_sum_f32(tr->comm, m->grad + t, m->num_params - t + ND_TAIL_USED, err));
    ND_TRY(nd_comm_reduce_scatter_f32(tr->comm, m->grad, z->slice_sum, z->rs_counts, err));
    /* Back in place, so penalties, clipping and the optimizer see one arena. */
    memcpy(m->grad + tr->slice.offset, z->slice_sum, sizeof(float) * (size_t)z->rs_counts[tr->rank]);
    return ND_OK;
}

nd_status nd_zero_grad_scale(nd_trainer *tr, int samples, int want_norm, float *scale, double *norm,
                             nd_error *err) {
    const size_t lo = tr->slice.offset, hi = lo + (size_t)tr->zero->rs_counts[tr->rank];
    *scale = nd_train_grad_penalize(tr, samples, lo, hi);
    *norm = NAN;
    if (!(tr->cfg.clip_norm > 0.0f) && !want_norm) return ND_OK;
    /* The global norm from each slice's sum of squares: one scalar allreduce. */
    double sq = 0.0;
    const float *g = tr->model.grad;
    for (size_t i = lo; i < hi; ++i) sq += (double)g[i] * g[i];
    ND_TRY(nd_comm_allreduce_sum_f64(tr->comm, &sq, 1, err));
    *norm = sqrt(sq) * fabs((double)*scale);
    if (tr->cfg.clip_norm > 0.0f) {
        const float f = nd_clip_norm_factor(*norm, tr->cfg.clip_norm);
        *scale *= f;
        *norm *= f; /* the norm of what the optimizer applies, as in plain sync */
    }
    return ND_OK;
}

nd_status nd_zero_gather(nd_trainer *tr, nd_error *err) {
    return nd_comm_allgatherv_f32(tr->comm, tr->model.param, tr->zero->counts, tr->zero->displs, err);
}
