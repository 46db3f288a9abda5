#include "penalty.h"

#include "nndist/optim.h"
#include "nndist/regularize.h"
#include "nndist/sched.h"
#include "nndist/train.h"

int nd_penalty_covers(const nd_penalty *p, const nd_tensor *t) {
    return t->role == ND_TENSOR_WEIGHT || (t->role == ND_TENSOR_BIAS && p->regularize_bias);
}

float nd_penalty_apply(const nd_penalty *p, nd_model *m, int samples, size_t lo, size_t hi) {
    if (hi > m->num_trainable) hi = m->num_trainable; /* the running statistics are not gradients */
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
    if (p->clip_value > 0.0f && lo < hi) {
        nd_clip_by_value(m->grad + lo, hi - lo, scale, p->clip_value);
        scale = 1.0f;
    }
    return scale;
}

void nd_train_penalty_gradient(const nd_train_config *cfg, float weight_decay, nd_model *m) {
    const nd_penalty p = {.weight_decay = weight_decay > 0.0f ? weight_decay : cfg->weight_decay,
                          .l1 = cfg->l1,
                          .regularize_bias = cfg->regularize_bias}; /* no clipping: the penalty's gradient alone */
    (void)nd_penalty_apply(&p, m, 1, 0, m->num_trainable);
}

float nd_penalty_scale_all(const nd_penalty *p, nd_model *m, int samples, double *norm) {
    float scale = nd_penalty_apply(p, m, samples, 0, m->num_trainable);
    if (p->clip_norm > 0.0f) scale *= nd_clip_norm_factor(nd_grad_norm(m->grad, m->num_trainable, scale), p->clip_norm);
    if (norm) *norm = nd_grad_norm(m->grad, m->num_trainable, scale);
    return scale;
}
