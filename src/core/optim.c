#include "nndist/optim.h"

#include <math.h>
#include <string.h>

#include "nndist/arena.h"

const char *const nd_opt_names[] = {[ND_OPT_SGD] = "sgd",           [ND_OPT_MOMENTUM] = "momentum",
                                    [ND_OPT_NESTEROV] = "nesterov", [ND_OPT_ADAM] = "adam",
                                    [ND_OPT_ADAMW] = "adamw",       [ND_OPT_ADAGRAD] = "adagrad",
                                    [ND_OPT_RMSPROP] = "rmsprop",   [ND_OPT_ADADELTA] = "adadelta",
                                    [ND_OPT_LBFGS] = "lbfgs",       NULL};

/* Which state buffers an optimizer keeps (rmsprop without momentum keeps
 * no v, so its checkpoints stay as they were). */
static int uses_m(const nd_opt_config *c) { return c->kind != ND_OPT_SGD && c->kind != ND_OPT_LBFGS; }
static int uses_v(const nd_opt_config *c) {
    return c->kind == ND_OPT_ADAM || c->kind == ND_OPT_ADAMW || c->kind == ND_OPT_ADADELTA ||
        (c->kind == ND_OPT_RMSPROP && c->rmsprop_momentum > 0.0f);
}

int nd_opt_parse(const char *name, nd_opt_kind *kind) {
    for (int k = 0; k < (int)(sizeof nd_opt_names / sizeof nd_opt_names[0]) - 1; ++k)
        if (strcmp(name, nd_opt_names[k]) == 0) {
            *kind = (nd_opt_kind)k;
            return 0;
        }
    return -1;
}

const char *nd_opt_name(nd_opt_kind kind) {
    return (unsigned)kind + 1 < sizeof nd_opt_names / sizeof nd_opt_names[0] ? nd_opt_names[kind] : "?";
}

nd_status nd_optimizer_create(nd_optimizer *opt, const nd_opt_config *cfg, size_t n, nd_error *err) {
    memset(opt, 0, sizeof *opt);
    opt->cfg = *cfg;
    opt->n = n;
    if (uses_m(cfg)) opt->m = nd_buffer_alloc(n);
    if (uses_v(cfg)) opt->v = nd_buffer_alloc(n);
    if ((uses_m(cfg) && !opt->m) || (uses_v(cfg) && !opt->v)) {
        nd_optimizer_destroy(opt);
        return ND_FAIL(err, ND_ERR_NOMEM, "optimizer: cannot allocate state for %zu parameters", n);
    }
    return ND_OK;
}

void nd_optimizer_destroy(nd_optimizer *opt) {
    nd_buffer_free(opt->m);
    nd_buffer_free(opt->v);
    memset(opt, 0, sizeof *opt);
}

double nd_optimizer_state_floats(const nd_optimizer *opt) {
    return (double)opt->n * ((opt->m != NULL) + (opt->v != NULL));
}

void nd_optimizer_step(nd_optimizer *opt, float *restrict param, const float *restrict grad, float grad_scale,
                       float lr) {
    const size_t f = opt->first < opt->n ? opt->first : opt->n;
    const size_t n = opt->n - f;
    const float mu = opt->cfg.momentum;
    float *restrict m = opt->m ? opt->m + f : NULL;
    float *restrict v = opt->v ? opt->v + f : NULL;
    param += f;
    grad += f;
    opt->step += 1;
    switch (opt->cfg.kind) {
    case ND_OPT_SGD: {
        const float a = lr * grad_scale;
        for (size_t i = 0; i < n; ++i) param[i] -= a * grad[i];
        break;
    }
    case ND_OPT_MOMENTUM: {
        const float a = lr * grad_scale;
        for (size_t i = 0; i < n; ++i) {
            m[i] = mu * m[i] - a * grad[i];
            param[i] += m[i];
        }
        break;
    }
    case ND_OPT_NESTEROV: {
        const float a = lr * grad_scale;
        for (size_t i = 0; i < n; ++i) {
            const float prev = m[i];
            m[i] = mu * m[i] - a * grad[i];
            param[i] += -mu * prev + (1.0f + mu) * m[i];
        }
        break;
    }
    case ND_OPT_ADAGRAD: {
        const float eps = opt->cfg.eps;
        for (size_t i = 0; i < n; ++i) {
            const float g = grad_scale * grad[i];
            m[i] += g * g;
            param[i] -= lr * g / (sqrtf(m[i]) + eps);
        }
        break;
    }
    case ND_OPT_RMSPROP: {
        const float rho = opt->cfg.rho, eps = opt->cfg.eps, mu_r = opt->cfg.rmsprop_momentum;
        if (v) /* PyTorch's momentum: a velocity of the scaled steps */
            for (size_t i = 0; i < n; ++i) {
                const float g = grad_scale * grad[i];
                m[i] = rho * m[i] + (1.0f - rho) * g * g;
                v[i] = mu_r * v[i] + g / (sqrtf(m[i]) + eps);
                param[i] -= lr * v[i];
            }
        else
            for (size_t i = 0; i < n; ++i) {
                const float g = grad_scale * grad[i];
                m[i] = rho * m[i] + (1.0f - rho) * g * g;
                param[i] -= lr * g / (sqrtf(m[i]) + eps);
            }
        break;
    }
    case ND_OPT_ADADELTA: {
        const float rho = opt->cfg.rho, eps = opt->cfg.eps;
        for (size_t i = 0; i < n; ++i) {
            const float g = grad_scale * grad[i];
            m[i] = rho * m[i] + (1.0f - rho) * g * g;
            const float d = sqrtf(v[i] + eps) / sqrtf(m[i] + eps) * g;
            v[i] = rho * v[i] + (1.0f - rho) * d * d;
            param[i] -= lr * d;
        }
        break;
    }
    case ND_OPT_LBFGS: /* the full-batch driver moves the weights itself */ break;
    case ND_OPT_ADAMW:
        /* Decoupled decay first (as PyTorch's AdamW), only where the mask says so. */
        if (opt->cfg.weight_decay > 0.0f) {
            const float keep = 1.0f - lr * opt->cfg.weight_decay;
            const float *mask = opt->decay_mask ? opt->decay_mask + f : NULL;
            if (mask)
                for (size_t i = 0; i < n; ++i) param[i] *= mask[i] != 0.0f ? keep : 1.0f;
            else
                for (size_t i = 0; i < n; ++i) param[i] *= keep;
        }
        __attribute__((fallthrough)); /* then the Adam update */
    case ND_OPT_ADAM: {
        const float b1 = opt->cfg.beta1, b2 = opt->cfg.beta2, eps = opt->cfg.eps;
        /* Bias corrections in double: b^t underflows slowly but 1-b^t loses digits. */
        const float c1 = (float)(1.0 / (1.0 - pow(b1, (double)opt->step)));
        const float c2 = (float)(1.0 / (1.0 - pow(b2, (double)opt->step)));
        for (size_t i = 0; i < n; ++i) {
            const float g = grad_scale * grad[i];
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            param[i] -= lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
        }
        break;
    }
    }
}
