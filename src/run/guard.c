/* The numerical guard (--on-nan): a step whose loss or gradient is not
 * finite is caught after the exchange, before anything is applied, from
 * values every rank holds alike (the summed loss, the summed bias and
 * batch-norm gradients: a NaN or Inf anywhere in a layer's output gradient
 * reaches its bias gradient, and the exchange carries it to every rank), so
 * no extra reduction is needed (a NaN, or an Inf, stays one in any order of
 * summation; only a sum that overflows in one order and not in another
 * could split the verdict, on more than 2 ranks without --deterministic);
 * with --shard-optimizer the global norm, one
 * scalar allreduce, plays that part. Then the run stops, naming the step,
 * the layer and the quantity, before the bad update touches the weights or
 * a checkpoint, or with --on-nan skip the step is dropped and counted. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train_internal.h"

/* "NaN", "+Inf" or "-Inf". */
static const char *nonfinite_name(double v) { return isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"; }

/* The first non-finite value of span s of grad, or -1. */
static long first_nonfinite(const float *grad, nd_span s) {
    for (size_t i = 0; i < s.length; ++i)
        if (!isfinite(grad[s.offset + i])) return (long)i;
    return -1;
}

int nd_guard_find(const nd_model *m, int sliced, double grad_norm, char *what, size_t cap) {
    const float *g = m->grad;
    const float loss = g[m->num_params + ND_TAIL_LOSS];
    if (!isfinite(loss)) {
        snprintf(what, cap, "the loss is %s", nonfinite_name(loss));
        return 1;
    }
    if (sliced) {
        if (isfinite(grad_norm)) return 0;
        snprintf(what, cap, "the gradient's global norm is %s", nonfinite_name(grad_norm));
        return 1;
    }
    /* Top layer first: a NaN born in layer l reaches every layer below it.
     * Biases and batch-norm shifts are small and see every NaN of their
     * layer's gradient. */
    for (int l = m->num_layers - 1; l >= 0; --l)
        for (int t = 0; t < m->num_tensors; ++t) {
            const nd_tensor *T = &m->tensor[t];
            if (T->layer != l ||
                (T->role != ND_TENSOR_BIAS && T->role != ND_TENSOR_BN_SCALE && T->role != ND_TENSOR_BN_SHIFT))
                continue;
            const long i = first_nonfinite(g, T->span);
            if (i < 0) continue;
            snprintf(what, cap, "the gradient of %s[%ld] is %s", T->name, i,
                     nonfinite_name(g[T->span.offset + (size_t)i]));
            return 1;
        }
    return 0;
}

nd_status nd_guard_bad_step(nd_trainer *tr, const char *what, nd_error *err) {
    tr->state.nan_skips += 1;
    tr->state.nan_consecutive += 1;
    const int skip = tr->cfg.on_nan == ND_ON_NAN_SKIP;
    if (skip && tr->state.nan_consecutive <= tr->cfg.max_nan_skips) {
        if (tr->report.active)
            fprintf(tr->report.out, "step %ld: %s: skipped (%d in a row, %ld in the run)\n", tr->state.step + 1, what,
                    tr->state.nan_consecutive, tr->state.nan_skips);
        return ND_OK;
    }
    /* Every rank found the same; rank 0 tells. */
    tr->state.agreed_failure = 1;
    tr->state.status = ND_RUN_STOPPED_ON_NAN;
    char where[ND_PATH_MAX + 64] = "";
    if (tr->cfg.checkpoint_dir[0])
        snprintf(where, sizeof where, "; the checkpoints in %s are untouched", tr->cfg.checkpoint_dir);
    nd_status st;
    if (skip)
        st = ND_FAIL(err, ND_ERR_DATA, "step %ld: %s, %d bad steps in a row (--max-nan-skips %d): stopped%s",
                     tr->state.step + 1, what, tr->state.nan_consecutive, tr->cfg.max_nan_skips, where);
    else
        st = ND_FAIL(err, ND_ERR_DATA, "step %ld: %s: stopped before applying it%s (--on-nan skip drops such steps)",
                     tr->state.step + 1, what, where);
    snprintf(tr->state.reason, sizeof tr->state.reason, "%s", err->msg);
    if (tr->rank != 0) err->msg[0] = '\0';
    return st;
}
