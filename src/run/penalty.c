#include "penalty.h"

#include <math.h>

#include "nndist/optim.h"
#include "nndist/regularize.h"
#include "nndist/sched.h"
#include "nndist/train.h"

int nd_penalty_covers(const nd_penalty *p, const nd_tensor *t) {
    return t->role == ND_TENSOR_WEIGHT || (t->role == ND_TENSOR_BIAS && p->regularize_bias);
}

float nd_penalty_apply(const nd_penalty *p, nd_model *m, int samples, size_t lo, size_t hi, double *sq_before,
                       size_t *clamped) {
    if (hi > m->num_trainable) hi = m->num_trainable; /* the running statistics are not gradients */
    if (lo < m->frozen_end) lo = m->frozen_end;       /* a frozen base does not decay either */
    float scale = 1.0f / (float)samples;
    for (int t = 0; t < m->num_tensors; ++t) {
        if (!nd_penalty_covers(p, &m->tensor[t])) continue;
        const nd_span s = m->tensor[t].span;
        {
            const size_t a = s.offset > lo ? s.offset : lo;
            const size_t b = s.offset + s.length < hi ? s.offset + s.length : hi;
            if (a >= b) continue;
            float *g = m->grad + a;
            const float *w = m->param + a;
            /* g is a sum over the batch, so the penalties are scaled up to match. */
            if (p->weight_decay > 0.0f) nd_reg_l2(g, w, b - a, p->weight_decay * (float)samples);
            if (p->l1 > 0.0f) nd_reg_l1(g, w, b - a, p->l1 * (float)samples);
        }
    }
    if (sq_before) {
        const double n = lo < hi ? nd_grad_norm(m->grad + lo, hi - lo, scale) : 0.0;
        *sq_before = n * n;
    }
    size_t changed = 0;
    if (p->clip_value > 0.0f && lo < hi) {
        changed = nd_clip_by_value(m->grad + lo, hi - lo, scale, p->clip_value);
        scale = 1.0f;
    }
    if (clamped) *clamped = changed;
    return scale;
}

void nd_train_penalty_gradient(const nd_train_config *cfg, float weight_decay, nd_model *m) {
    const nd_penalty p = {.weight_decay = weight_decay > 0.0f ? weight_decay : cfg->weight_decay,
                          .l1 = cfg->l1,
                          .regularize_bias = cfg->regularize_bias}; /* no clipping: the penalty's gradient alone */
    (void)nd_penalty_apply(&p, m, 1, 0, m->num_trainable, NULL, NULL);
}

float nd_penalty_scale_all(const nd_penalty *p, nd_model *m, int samples, bool want_norms, nd_clip_figures *clip) {
    double sq = NAN;
    /* The norm before value clipping costs a pass of its own; before a norm clip it is the one computed anyway. */
    const bool pass_before = want_norms && p->clip_value > 0.0f;
    float scale = nd_penalty_apply(p, m, samples, 0, m->num_trainable, pass_before ? &sq : NULL, &clip->clamped);
    clip->before = pass_before ? sqrt(sq) : NAN;
    clip->after = NAN;
    clip->clipped = clip->clamped > 0;
    if (p->clip_norm > 0.0f) {
        const double norm = nd_grad_norm(m->grad, m->num_trainable, scale);
        if (!pass_before) clip->before = norm;
        const float f = nd_clip_norm_factor(norm, p->clip_norm);
        clip->clipped |= f < 1.0f;
        scale *= f;
        if (want_norms) clip->after = norm * f;
    } else if (want_norms) {
        const double norm = nd_grad_norm(m->grad, m->num_trainable, scale);
        if (!pass_before) clip->before = norm;
        clip->after = norm;
    }
    return scale;
}
