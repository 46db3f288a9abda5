/* The double-precision reference forward pass and the centred-difference
 * check (gradcheck.h). Written for clarity, not speed: plain loops, one
 * sample row at a time, except batch norm, which needs the whole batch. */
#include "nndist/gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/regularize.h"
#include "nndist/rng.h"

static double act_d(double x, nd_activation a) {
    switch (a.kind) {
    case ND_ACT_RELU: return x > 0 ? x : 0;
    case ND_ACT_LEAKY_RELU: return x > 0 ? x : a.alpha * x;
    case ND_ACT_ELU: return x > 0 ? x : a.alpha * expm1(x);
    case ND_ACT_TANH: return tanh(x);
    case ND_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    default: return x;
    }
}

/* Folds one piecewise decision (which side of a kink) into a hash. */
static void note(uint64_t *h, int side) { *h = (*h ^ (uint64_t)(side + 1)) * 0x100000001b3ull; }

/* Loss of one row of outputs z (k) in double; its kinks go into *h. */
static double row_loss(nd_loss_kind kind, const double *z, int k, int y, const float *t, uint64_t *h) {
    double l = 0.0;
    switch (kind) {
    case ND_LOSS_SOFTMAX_CE: {
        double mx = z[0], s = 0.0;
        for (int c = 1; c < k; ++c) mx = fmax(mx, z[c]);
        for (int c = 0; c < k; ++c) s += exp(z[c] - mx);
        return log(s) + mx - z[y];
    }
    case ND_LOSS_HINGE:
    case ND_LOSS_SQUARED_HINGE:
        for (int c = 0; c < k; ++c) {
            const double m = c == y ? 0.0 : fmax(0.0, z[c] - z[y] + 1.0);
            note(h, m > 0.0);
            l += kind == ND_LOSS_HINGE ? m : m * m;
        }
        return l;
    case ND_LOSS_SIGMOID_BCE:
        for (int c = 0; c < k; ++c) l += fmax(z[c], 0.0) - z[c] * t[c] + log1p(exp(-fabs(z[c])));
        return l;
    case ND_LOSS_L2:
        for (int c = 0; c < k; ++c) l += (z[c] - t[c]) * (z[c] - t[c]);
        return l;
    case ND_LOSS_L1:
        for (int c = 0; c < k; ++c) l += fabs(z[c] - t[c]), note(h, z[c] > t[c]);
        return l;
    }
    return NAN;
}

double nd_gradcheck_loss(const nd_model *m, const double *p, const float *x, int batch, nd_loss_kind loss,
                         const int *labels, const float *targets, uint64_t *kinks) {
    uint64_t h = 0xcbf29ce484222325ull;
    /* Activations of the whole batch, one layer at a time. */
    size_t widest = (size_t)m->max_width;
    double *a = malloc(sizeof(double) * batch * widest), *z = malloc(sizeof(double) * batch * widest);
    if (!a || !z) {
        free(a), free(z);
        return NAN;
    }
    int in_dim = m->spec.input_dim;
    for (int i = 0; i < batch; ++i)
        for (int j = 0; j < in_dim; ++j) {
            const float mask = m->spec.input_drop > 0 ? m->drop_mask[0][(size_t)i * in_dim + j] : 1.0f;
            a[(size_t)i * widest + j] = (double)x[(size_t)i * in_dim + j] * mask;
        }
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_dense_layer *L = &m->layer[l];
        for (int i = 0; i < batch; ++i)
            for (int o = 0; o < L->out_dim; ++o) {
                double s = p[L->b.offset + o];
                for (int k = 0; k < L->in_dim; ++k)
                    s += p[L->w.offset + (size_t)o * L->in_dim + k] * a[(size_t)i * widest + k];
                z[(size_t)i * widest + o] = s;
            }
        if (L->batch_norm)
            for (int o = 0; o < L->out_dim; ++o) {
                double mean = 0, var = 0;
                for (int i = 0; i < batch; ++i) mean += z[(size_t)i * widest + o];
                mean /= batch;
                for (int i = 0; i < batch; ++i) var += pow(z[(size_t)i * widest + o] - mean, 2);
                var /= batch;
                const double inv = 1.0 / sqrt(var + m->spec.bn_eps);
                for (int i = 0; i < batch; ++i) {
                    double *v = &z[(size_t)i * widest + o];
                    *v = p[L->gamma.offset + o] * (*v - mean) * inv + p[L->beta.offset + o];
                }
            }
        const int last = l == m->num_layers - 1;
        for (int i = 0; i < batch; ++i)
            for (int u = 0; u < L->width; ++u) {
                double v;
                if (L->act.kind == ND_ACT_MAXOUT) {
                    const double *pz = z + (size_t)i * widest + (size_t)u * L->pieces;
                    int arg = 0;
                    for (int k = 1; k < L->pieces; ++k)
                        if (pz[k] > pz[arg]) arg = k;
                    v = pz[arg];
                    note(&h, arg);
                } else {
                    v = act_d(z[(size_t)i * widest + u], L->act);
                    if (L->act.kind == ND_ACT_RELU || L->act.kind == ND_ACT_LEAKY_RELU || L->act.kind == ND_ACT_ELU)
                        note(&h, z[(size_t)i * widest + u] > 0);
                }
                if (!last && L->drop > 0) v *= m->drop_mask[l + 1][(size_t)i * L->width + u];
                a[(size_t)i * widest + u] = v;
            }
        in_dim = L->width;
    }
    double total = 0.0;
    const int k = m->spec.num_classes;
    for (int i = 0; i < batch; ++i)
        total += row_loss(loss, a + (size_t)i * widest, k, labels ? labels[i] : 0,
                          targets ? targets + (size_t)i * k : NULL, &h);
    free(a), free(z);
    if (kinks) *kinks = h;
    return total;
}

/* |a - n| / max(|a|, |n|) with float32 in mind. A float32 backprop rounds
 * each sum to about 1e-7 of its largest terms, which are of the order of
 * the largest gradient `scale`: an entry far below that carries that much
 * absolute error. So both below 1e-6 scale (a bias before batch norm, whose
 * true gradient is 0) counts as agreement, and the denominator is at least
 * 1e-4 scale (a sum that cancels to a small value). */
static double rel_error(double a, double n, double scale) {
    const double big = fmax(fabs(a), fabs(n));
    return big <= 1e-6 * scale ? 0.0 : fabs(a - n) / fmax(big, 1e-4 * scale);
}

/* Samples up to `samples` indices of span s and records the worst error. */
static void check_span(nd_gradcheck_group *g, const nd_model *m, nd_span s, double *p, const float *grad,
                       const float *x, int batch, nd_loss_kind loss, const int *labels, const float *targets,
                       int samples, nd_rng *rng, double h, double scale) {
    const size_t count = s.length < (size_t)samples ? s.length : (size_t)samples;
    uint64_t at, k_up, k_down;
    nd_gradcheck_loss(m, p, x, batch, loss, labels, targets, &at);
    for (size_t c = 0; c < count; ++c) {
        const size_t i = s.offset + (count == s.length ? c : (size_t)nd_rng_below(rng, s.length));
        const double keep = p[i];
        p[i] = keep + h;
        const double up = nd_gradcheck_loss(m, p, x, batch, loss, labels, targets, &k_up);
        p[i] = keep - h;
        const double down = nd_gradcheck_loss(m, p, x, batch, loss, labels, targets, &k_down);
        p[i] = keep;
        if (k_up != at || k_down != at) { /* a kink lies within h: the difference is not the derivative */
            g->kinks++;
            continue;
        }
        g->max_rel = fmax(g->max_rel, rel_error(grad[i], (up - down) / (2 * h), scale));
        g->checked++;
    }
}

int nd_gradcheck_run(const nd_model *m, const float *grad, const float *x, int batch, nd_loss_kind loss,
                     const int *labels, const float *targets, int samples, uint64_t seed, double h, double l2,
                     double l1, nd_gradcheck_group *groups) {
    double *p = malloc(sizeof(double) * m->num_params);
    if (!p) return 0;
    for (size_t i = 0; i < m->num_params; ++i) p[i] = m->param[i];
    nd_rng rng;
    nd_rng_seed(&rng, seed, 0x9c, 0);
    double scale = 0.0;
    for (size_t i = 0; i < m->num_trainable; ++i) scale = fmax(scale, fabs(grad[i]));
    scale = fmax(scale, 1e-12); /* what rel_error measures against */
    int n = 0;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_dense_layer *L = &m->layer[l];
        const struct {
            const char *fmt;
            nd_span s;
        } parts[4] = {{"dense%d/W", L->w}, {"dense%d/b", L->b}, {"bn%d/gamma", L->gamma}, {"bn%d/beta", L->beta}};
        for (int k = 0; k < (L->batch_norm ? 4 : 2); ++k) {
            nd_gradcheck_group *g = &groups[n++];
            memset(g, 0, sizeof *g);
            snprintf(g->name, sizeof g->name, parts[k].fmt, l);
            check_span(g, m, parts[k].s, p, grad, x, batch, loss, labels, targets, samples, &rng, h, scale);
        }
    }
    /* Penalties, apart from the data loss: analytic from the trainer's own
     * routines, numeric from the closed forms in double. */
    const double coeff[2] = {l2, l1};
    for (int r = 0; r < 2; ++r) {
        if (coeff[r] <= 0) continue;
        nd_gradcheck_group *g = &groups[n++];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, r == 0 ? "l2 penalty" : "l1 penalty");
        for (int l = 0; l < m->num_layers; ++l) {
            const nd_span s = m->layer[l].w;
            float *ga = calloc(s.length, sizeof(float));
            if (!ga) break;
            if (r == 0) nd_reg_l2(ga, m->param + s.offset, s.length, (float)l2);
            else nd_reg_l1(ga, m->param + s.offset, s.length, (float)l1);
            const size_t count = s.length < (size_t)samples ? s.length : (size_t)samples;
            for (size_t c = 0; c < count; ++c) {
                const size_t i = count == s.length ? c : (size_t)nd_rng_below(&rng, s.length);
                const double w = p[s.offset + i];
                const double num = r == 0 ? (0.5 * l2 * ((w + h) * (w + h) - (w - h) * (w - h))) / (2 * h)
                                          : l1 * (fabs(w + h) - fabs(w - h)) / (2 * h);
                g->max_rel = fmax(g->max_rel, rel_error(ga[i], num, 1e-12));
                g->checked++;
            }
            free(ga);
        }
    }
    free(p);
    return n;
}
