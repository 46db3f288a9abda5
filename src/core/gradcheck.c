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
    case ND_LOSS_BINARY_HINGE:
        for (int c = 0; c < k; ++c) {
            const double m = fmax(0.0, 1.0 - (2.0 * t[c] - 1.0) * z[c]);
            note(h, m > 0.0);
            l += m;
        }
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

/* Applies act to v with its kink recorded in *h. */
static double act_kink(double v, nd_activation act, uint64_t *h) {
    if (act.kind == ND_ACT_RELU || act.kind == ND_ACT_LEAKY_RELU || act.kind == ND_ACT_ELU) note(h, v > 0);
    return act_d(v, act);
}

/* z (batch x out_c x oh x ow) = the convolution of a (batch x c x h x w) by
 * weights w (out_c x c x k x k) and bias b (out_c), direct loops. */
static void conv_d(double *z, const double *a, const double *w, const double *b, const nd_conv_geom *g, int batch) {
    for (int i = 0; i < batch; ++i)
        for (int o = 0; o < g->out_c; ++o)
            for (int y = 0; y < g->out_h; ++y)
                for (int x = 0; x < g->out_w; ++x) {
                    double s = b[o];
                    for (int c = 0; c < g->c; ++c)
                        for (int ki = 0; ki < g->kernel; ++ki)
                            for (int kj = 0; kj < g->kernel; ++kj) {
                                const int iy = y * g->stride - g->pad + ki, ix = x * g->stride - g->pad + kj;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                s += w[((o * g->c + c) * g->kernel + ki) * g->kernel + kj] *
                                    a[(((size_t)i * g->c + c) * g->h + iy) * g->w + ix];
                            }
                    z[(((size_t)i * g->out_c + o) * g->out_h + y) * g->out_w + x] = s;
                }
}

/* Pooling of a (batch x c x h x w); max pooling records its winners. */
static void pool_d(double *z, const double *a, const nd_layer *L, int batch, uint64_t *h) {
    const nd_conv_geom *g = &L->geom;
    const int global = L->kind == ND_LAYER_GLOBAL_POOL;
    const int kh = global ? g->h : g->kernel, kw = global ? g->w : g->kernel;
    for (int i = 0; i < batch; ++i)
        for (int c = 0; c < g->c; ++c)
            for (int y = 0; y < g->out_h; ++y)
                for (int x = 0; x < g->out_w; ++x) {
                    double best = -INFINITY, sum = 0.0;
                    int arg = 0;
                    for (int ki = 0; ki < kh; ++ki)
                        for (int kj = 0; kj < kw; ++kj) {
                            const double v =
                                a[(((size_t)i * g->c + c) * g->h + y * g->stride + ki) * g->w + x * g->stride + kj];
                            sum += v;
                            if (v > best) best = v, arg = ki * kw + kj;
                        }
                    if (L->kind == ND_LAYER_MAXPOOL) note(h, arg);
                    z[(((size_t)i * g->c + c) * g->out_h + y) * g->out_w + x] = L->kind == ND_LAYER_MAXPOOL
                        ? best
                        : sum / (kh * kw);
                }
}

/* Batch norm of z (batch x channels x spatial) with the batch's statistics. */
static void bn_d(double *z, const double *p, const nd_bn_site *bn, double eps, int batch) {
    const int n = bn->channels, sp = bn->spatial;
    for (int j = 0; j < n; ++j) {
        double mean = 0, var = 0;
        for (int i = 0; i < batch; ++i)
            for (int s = 0; s < sp; ++s) mean += z[((size_t)i * n + j) * sp + s];
        mean /= (double)batch * sp;
        for (int i = 0; i < batch; ++i)
            for (int s = 0; s < sp; ++s) var += pow(z[((size_t)i * n + j) * sp + s] - mean, 2);
        var /= (double)batch * sp;
        const double inv = 1.0 / sqrt(var + eps);
        for (int i = 0; i < batch; ++i)
            for (int s = 0; s < sp; ++s) {
                double *v = &z[((size_t)i * n + j) * sp + s];
                *v = p[bn->gamma.offset + j] * (*v - mean) * inv + p[bn->beta.offset + j];
            }
    }
}

/* One layer of the reference: a (batch x in_dim) in, out (batch x width);
 * block is the input of the residual block this layer may end. */
static void layer_d(const nd_model *m, int l, const double *p, const double *a, const double *block, double *z,
                    double *skip, double *out, int batch, uint64_t *h) {
    const nd_layer *L = &m->layer[l];
    switch (L->kind) {
    case ND_LAYER_DENSE:
        for (int i = 0; i < batch; ++i)
            for (int o = 0; o < L->out_dim; ++o) {
                double s = p[L->b.offset + o];
                for (int k = 0; k < L->in_dim; ++k) { /* DropConnect: the analytic pass's mask */
                    const size_t wi = (size_t)o * L->in_dim + k;
                    const double keep = L->drop_connect > 0.0f ? m->dc_mask[l][wi] : 1.0;
                    s += p[L->w.offset + wi] * keep * a[(size_t)i * L->in_dim + k];
                }
                z[(size_t)i * L->out_dim + o] = s;
            }
        break;
    case ND_LAYER_CONV: conv_d(z, a, p + L->w.offset, p + L->b.offset, &L->geom, batch); break;
    default: pool_d(z, a, L, batch, h);
    }
    if (L->batch_norm) bn_d(z, p, &L->bn, m->spec.bn_eps, batch);
    for (int i = 0; i < batch; ++i)
        for (int u = 0; u < L->width; ++u) {
            if (L->act.kind != ND_ACT_MAXOUT) {
                out[(size_t)i * L->width + u] = act_kink(z[(size_t)i * L->out_dim + u], L->act, h);
                continue;
            }
            const double *pz = z + (size_t)i * L->out_dim + (size_t)u * L->pieces;
            int arg = 0;
            for (int k = 1; k < L->pieces; ++k)
                if (pz[k] > pz[arg]) arg = k;
            out[(size_t)i * L->width + u] = pz[arg];
            note(h, arg);
        }
    if (L->res_from < 0) return;
    const double *s = block;
    if (L->proj) {
        conv_d(skip, block, p + L->proj_w.offset, p + L->proj_b.offset, &L->proj_geom, batch);
        if (L->proj_bn.channels) bn_d(skip, p, &L->proj_bn, m->spec.bn_eps, batch);
        s = skip;
    }
    for (size_t i = 0; i < (size_t)batch * L->width; ++i) out[i] = act_kink(out[i] + s[i], L->res_act, h);
}

double nd_gradcheck_loss(const nd_model *m, const double *p, const float *x, int batch, nd_loss_kind loss,
                         const int *labels, const float *targets, uint64_t *kinks) {
    uint64_t h = 0xcbf29ce484222325ull;
    /* Activations of the whole batch, one layer at a time, each packed
     * (batch x its width). */
    const size_t widest = (size_t)batch * m->max_width;
    double *a = malloc(sizeof(double) * widest), *z = malloc(sizeof(double) * widest);
    double *out = malloc(sizeof(double) * widest), *block = malloc(sizeof(double) * widest);
    double *skip = malloc(sizeof(double) * widest);
    double total = NAN;
    if (!a || !z || !out || !block || !skip) goto done;
    const int in_dim = m->spec.input_dim;
    for (size_t i = 0; i < (size_t)batch * in_dim; ++i)
        a[i] = (double)x[i] * (m->spec.input_drop > 0 ? m->drop_mask[0][i] : 1.0f);
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        for (int k = l; k < m->num_layers; ++k) /* a block starts here: keep its input */
            if (m->layer[k].res_from == l) memcpy(block, a, sizeof(double) * batch * L->in_dim);
        layer_d(m, l, p, a, block, z, skip, out, batch, &h);
        const int last = l == m->num_layers - 1;
        for (size_t i = 0; i < (size_t)batch * L->width; ++i)
            a[i] = out[i] * (!last && L->drop > 0 ? m->drop_mask[l + 1][i] : 1.0f);
    }
    total = 0.0;
    const int k = m->spec.num_classes;
    for (int i = 0; i < batch; ++i)
        total += row_loss(loss, a + (size_t)i * k, k, labels ? labels[i] : 0, targets ? targets + (size_t)i * k : NULL,
                          &h);
done:
    free(a), free(z), free(out), free(block), free(skip);
    if (kinks) *kinks = h;
    return total;
}

/* |a - n| / max(|a|, |n|) with float32 in mind. A float32 backprop rounds
 * each sum to a few units of 6e-8 of its largest terms, which are of the
 * order of the largest gradient `scale`, and the rounding adds up along the
 * chain: an entry far below the scale carries that absolute error (measured:
 * 1.5e-7 scale on a 1x1 projection behind a batch norm over 8 values, where
 * the entry was 1.5e-5 scale). So both below 1e-6 scale (a bias before batch
 * norm, whose true gradient is 0) counts as agreement, and the denominator
 * is at least 1e-3 scale, so that up to 1e-6 scale of rounding stays below
 * the failure bar; a wrong gradient of anything above that still fails. */
static double rel_error(double a, double n, double scale) {
    const double big = fmax(fabs(a), fabs(n));
    return big <= 1e-6 * scale ? 0.0 : fabs(a - n) / fmax(big, 1e-3 * scale);
}

/* Samples up to `samples` indices of span s and records the worst error. */
static void check_span(nd_gradcheck_group *g, const nd_model *m, nd_span s, double *p, const float *grad,
                       const float *x, int batch, nd_loss_kind loss, const int *labels, const float *targets,
                       int samples, nd_rng *rng, double h, double scale, FILE *log) {
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
            if (log)
                fprintf(log, "    %-14s [%zu]  analytic % .8e  a kink within h: skipped\n", g->name, i - s.offset,
                        (double)grad[i]);
            continue;
        }
        const double num = (up - down) / (2 * h), rel = rel_error(grad[i], num, scale);
        if (log)
            fprintf(log, "    %-14s [%zu]  analytic % .8e  numeric % .8e  rel %.2e\n", g->name, i - s.offset,
                    (double)grad[i], num, rel);
        g->max_rel = fmax(g->max_rel, rel);
        g->checked++;
    }
}

int nd_gradcheck_run(const nd_model *m, const float *grad, const float *x, int batch, nd_loss_kind loss,
                     const int *labels, const float *targets, int samples, uint64_t seed, double h, double l2,
                     double l1, nd_gradcheck_group *groups) {
    return nd_gradcheck_run_log(m, grad, x, batch, loss, labels, targets, samples, seed, h, l2, l1, groups, NULL);
}

int nd_gradcheck_run_log(const nd_model *m, const float *grad, const float *x, int batch, nd_loss_kind loss,
                         const int *labels, const float *targets, int samples, uint64_t seed, double h, double l2,
                         double l1, nd_gradcheck_group *groups, FILE *log) {
    double *p = malloc(sizeof(double) * m->num_params);
    if (!p) return 0;
    for (size_t i = 0; i < m->num_params; ++i) p[i] = m->param[i];
    nd_rng rng;
    nd_rng_seed(&rng, seed, 0x9c, 0);
    double scale = 0.0;
    for (size_t i = 0; i < m->num_trainable; ++i) scale = fmax(scale, fabs(grad[i]));
    scale = fmax(scale, 1e-12); /* what rel_error measures against */
    int n = 0;
    for (int t = 0; t < m->num_tensors; ++t) {
        const nd_tensor *T = &m->tensor[t];
        if (T->role == ND_TENSOR_BN_MEAN || T->role == ND_TENSOR_BN_VAR) continue; /* not trained */
        nd_gradcheck_group *g = &groups[n++];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, "%s", T->name);
        check_span(g, m, T->span, p, grad, x, batch, loss, labels, targets, samples, &rng, h, scale, log);
    }
    /* Penalties, apart from the data loss: analytic from the trainer's own
     * routines, numeric from the closed forms in double. */
    const double coeff[2] = {l2, l1};
    for (int r = 0; r < 2; ++r) {
        if (coeff[r] <= 0) continue;
        nd_gradcheck_group *g = &groups[n++];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, r == 0 ? "l2 penalty" : "l1 penalty");
        for (int t = 0; t < m->num_tensors; ++t) {
            if (m->tensor[t].role != ND_TENSOR_WEIGHT) continue;
            const nd_span s = m->tensor[t].span;
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
                const double rel = rel_error(ga[i], num, 1e-12);
                if (log)
                    fprintf(log, "    %-14s [%s %zu]  analytic % .8e  numeric % .8e  rel %.2e\n", g->name,
                            m->tensor[t].name, i, (double)ga[i], num, rel);
                g->max_rel = fmax(g->max_rel, rel);
                g->checked++;
            }
            free(ga);
        }
    }
    free(p);
    return n;
}
