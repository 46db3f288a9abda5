/* The health of a run at each epoch's last step: the gradient norm, per
 * layer the update/weight ratio, the data gradient's norm and histogram,
 * dead units, saturation and activation statistics. Not collective: every
 * sync replica holds the same weights and gradient; the activations are
 * this rank's last batch. Async server 0 uses the gradient and update
 * figures on its slice (no activations there). */
#include <math.h>
#include <string.h>

#include "train_internal.h"

/* Saturated: tanh |a| > 0.99, sigmoid a < 0.01 or a > 0.99. */
static int saturates(nd_act_kind act, float a) {
    if (act == ND_ACT_TANH) return fabsf(a) > 0.99f;
    return a < 0.01f || a > 0.99f;
}

/* Bins v (n), times scale, into h over their own min and max. */
static void histogram(nd_histogram *h, const float *v, size_t n, float scale) {
    memset(h, 0, sizeof *h);
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; ++i) {
        const float x = v[i] * scale;
        if (isfinite(x)) lo = fminf(lo, x), hi = fmaxf(hi, x);
    }
    if (!(lo <= hi)) {
        h->lo = h->hi = NAN;
        return;
    }
    h->lo = lo, h->hi = hi;
    const double width = (double)hi - lo;
    for (size_t i = 0; i < n; ++i) {
        const float x = v[i] * scale;
        if (!isfinite(x)) continue;
        int b = width > 0 ? (int)(((double)x - lo) / width * ND_HIST_BINS) : 0;
        h->count[b < ND_HIST_BINS ? b : ND_HIST_BINS - 1] += 1;
    }
}

static double sum_squares(const float *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += (double)v[i] * v[i];
    return s;
}

void nd_monitor_gradient(const nd_model *m, const float *grad, float scale, size_t lo, size_t hi, nd_epoch_stats *e) {
    e->has_monitor = 1;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        const int inside = L->w.length > 0 && L->w.offset >= lo && L->w.offset + L->w.length <= hi &&
            L->b.offset >= lo && L->b.offset + L->b.length <= hi;
        if (!inside) {
            e->layer_grad_norm[l] = NAN;
            memset(&e->grad_hist[l], 0, sizeof e->grad_hist[l]);
            e->grad_hist[l].lo = e->grad_hist[l].hi = NAN;
            continue;
        }
        const double sq = sum_squares(grad + L->w.offset, L->w.length) + sum_squares(grad + L->b.offset, L->b.length);
        e->layer_grad_norm[l] = sqrt(sq) * fabs((double)scale);
        histogram(&e->grad_hist[l], grad + L->w.offset, L->w.length, scale);
    }
}

void nd_monitor_before(nd_trainer *tr, nd_epoch_stats *e, double grad_norm, double grad_norm_clipped) {
    const nd_model *m = &tr->model;
    e->has_monitor = e->has_activations = 1;
    e->grad_norm = grad_norm;
    e->grad_norm_clipped = grad_norm_clipped;
    memcpy(tr->monitor_prev, m->param, sizeof(float) * m->num_params);
    const int b = tr->cfg.batch;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        const int w = L->width;
        const nd_act_kind act = (L->res_from >= 0 ? L->res_act : L->act).kind;
        const int sat = act == ND_ACT_TANH || act == ND_ACT_SIGMOID;
        const float *a = nd_model_activation(m, l);
        double sum = 0, sq = 0;
        int dead = 0;
        long saturated = 0;
        for (int j = 0; j < w; ++j) {
            int alive = 0;
            for (int i = 0; i < b; ++i) {
                const float v = a[(size_t)i * w + j];
                sum += v, sq += (double)v * v;
                alive |= v != 0.0f;
                if (sat) saturated += saturates(act, v);
            }
            dead += !alive;
        }
        const double n = (double)b * w, mean = sum / n;
        e->act_mean[l] = mean;
        e->act_std[l] = sqrt(fmax(sq / n - mean * mean, 0.0));
        e->dead_frac[l] = (double)dead / w;
        e->saturation[l] = sat ? (double)saturated / n : NAN;
        histogram(&e->act_hist[l], a, (size_t)b * w, 1.0f);
    }
}

void nd_monitor_save_weights(nd_trainer *tr, size_t lo, size_t hi) {
    memcpy(tr->monitor_prev + lo, tr->model.param + lo, sizeof(float) * (hi - lo));
}

void nd_monitor_after(nd_trainer *tr, nd_epoch_stats *e, size_t lo, size_t hi) {
    const nd_model *m = &tr->model;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_span w = m->layer[l].w;
        if (w.offset < lo || w.offset + w.length > hi) {
            e->update_ratio[l] = NAN;
            continue;
        }
        double du = 0, ww = 0;
        for (size_t i = w.offset; i < w.offset + w.length; ++i) {
            const double d = (double)m->param[i] - tr->monitor_prev[i];
            du += d * d;
            ww += (double)tr->monitor_prev[i] * tr->monitor_prev[i];
        }
        e->update_ratio[l] = ww > 0 ? sqrt(du / ww) : NAN;
    }
}
