#include "activation_rows.h"

#include <math.h>
#include <string.h>

const char *const nd_act_names[] = {
    [ND_ACT_IDENTITY] = "identity", [ND_ACT_RELU] = "relu", [ND_ACT_LEAKY_RELU] = "leaky_relu", [ND_ACT_TANH] = "tanh",
    [ND_ACT_SIGMOID] = "sigmoid",   [ND_ACT_ELU] = "elu",   [ND_ACT_MAXOUT] = "maxout",         NULL};

int nd_activation_parse(const char *name, nd_act_kind *kind) {
    for (int k = 0; k < (int)(sizeof nd_act_names / sizeof nd_act_names[0]) - 1; ++k) {
        if (strcmp(name, nd_act_names[k]) == 0) {
            *kind = (nd_act_kind)k;
            return 0;
        }
    }
    return -1;
}

const char *nd_activation_name(nd_act_kind kind) {
    return (unsigned)kind + 1 < sizeof nd_act_names / sizeof nd_act_names[0] ? nd_act_names[kind] : "?";
}

static inline float act_apply(float x, nd_activation act) {
    switch (act.kind) {
    case ND_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ND_ACT_LEAKY_RELU: return x > 0.0f ? x : act.alpha * x;
    case ND_ACT_TANH: return tanhf(x);
    case ND_ACT_SIGMOID:
        /* Two branches keep expf from overflowing for large |x|. */
        if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
        else {
            float e = expf(x);
            return e / (1.0f + e);
        }
    case ND_ACT_ELU: return x > 0.0f ? x : act.alpha * expm1f(x);
    case ND_ACT_IDENTITY:
    case ND_ACT_MAXOUT: break; /* maxout is not element-wise (nd_maxout_forward) */
    }
    return x;
}

/* Derivative written in terms of the output y = act(x). Leaky ReLU and ELU
 * with alpha > 0 preserve the sign of x, so y > 0 iff x > 0; for x <= 0 ELU's
 * derivative alpha e^x equals y + alpha. */
static inline float act_derivative(float y, nd_activation act) {
    switch (act.kind) {
    case ND_ACT_RELU: return y > 0.0f ? 1.0f : 0.0f;
    case ND_ACT_LEAKY_RELU: return y > 0.0f ? 1.0f : act.alpha;
    case ND_ACT_TANH: return 1.0f - y * y;
    case ND_ACT_SIGMOID: return y * (1.0f - y);
    case ND_ACT_ELU: return y > 0.0f ? 1.0f : y + act.alpha;
    case ND_ACT_IDENTITY:
    case ND_ACT_MAXOUT: break;
    }
    return 1.0f;
}

/* ReLU gets loops of its own (as in the fused row passes below): the
 * compiler vectorizes them, which the general switch defeats. */
void nd_activation_forward(float *x, size_t n, nd_activation act) {
    if (act.kind == ND_ACT_IDENTITY || act.kind == ND_ACT_MAXOUT) return;
    if (act.kind == ND_ACT_RELU) {
        for (size_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        return;
    }
    for (size_t i = 0; i < n; ++i) x[i] = act_apply(x[i], act);
}

void nd_activation_backward(float *dy, const float *y, size_t n, nd_activation act) {
    if (act.kind == ND_ACT_IDENTITY || act.kind == ND_ACT_MAXOUT) return;
    if (act.kind == ND_ACT_RELU) {
        for (size_t i = 0; i < n; ++i) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
        return;
    }
    for (size_t i = 0; i < n; ++i) dy[i] *= act_derivative(y[i], act);
}

/* One row at a time so the bias add, the activation and (backward) the bias
 * gradient happen in a single pass over the GEMM output. */
void nd_bias_act_row(float *row, const float *b, int n, nd_activation act) {
    switch (act.kind) {
    case ND_ACT_RELU:
        for (int j = 0; j < n; ++j) {
            float z = row[j] + b[j];
            row[j] = z > 0.0f ? z : 0.0f;
        }
        return;
    case ND_ACT_IDENTITY:
        for (int j = 0; j < n; ++j) row[j] += b[j];
        return;
    default:
        for (int j = 0; j < n; ++j) row[j] = act_apply(row[j] + b[j], act);
    }
}

void nd_act_grad_bias_row(float *drow, const float *row, float *db, int n, nd_activation act) {
    switch (act.kind) {
    case ND_ACT_RELU:
        for (int j = 0; j < n; ++j) {
            float g = row[j] > 0.0f ? drow[j] : 0.0f;
            drow[j] = g;
            db[j] += g;
        }
        return;
    case ND_ACT_IDENTITY:
        for (int j = 0; j < n; ++j) db[j] += drow[j];
        return;
    default:
        for (int j = 0; j < n; ++j) {
            float g = drow[j] * act_derivative(row[j], act);
            drow[j] = g;
            db[j] += g;
        }
    }
}

void nd_maxout_forward(float *out, const float *in, int batch, int width, int pieces) {
    const size_t n = (size_t)batch * width;
    for (size_t u = 0; u < n; ++u) {
        const float *p = in + u * pieces;
        float best = p[0];
        for (int k = 1; k < pieces; ++k) best = p[k] > best ? p[k] : best;
        out[u] = best;
    }
}

void nd_maxout_backward(float *din, const float *dout, const float *in, int batch, int width, int pieces) {
    const size_t n = (size_t)batch * width;
    for (size_t u = 0; u < n; ++u) {
        const float *p = in + u * pieces;
        int arg = 0;
        for (int k = 1; k < pieces; ++k)
            if (p[k] > p[arg]) arg = k;
        float *d = din + u * pieces;
        for (int k = 0; k < pieces; ++k) d[k] = k == arg ? dout[u] : 0.0f;
    }
}
