/* The health of a run at each epoch's last step (sync): the gradient
 * norm, per layer the update/weight ratio, dead units and activation
 * statistics. Not collective: every replica holds the same weights and
 * gradient; the activations are this rank's last batch. */
#include <math.h>
#include <string.h>

#include "train_internal.h"

/* Epoch-end health figures (not collective: every replica holds the same
 * weights and gradient; the activations are rank 0's last batch). */
void nd_monitor_before(nd_trainer *tr, nd_epoch_stats *e, double grad_norm) {
    const nd_model *m = &tr->model;
    e->has_monitor = 1;
    e->grad_norm = grad_norm;
    memcpy(tr->monitor_prev, m->param, sizeof(float) * m->num_params);
    const int b = tr->cfg.batch;
    for (int l = 0; l < m->num_layers; ++l) {
        const int w = m->layer[l].width;
        const float *a = nd_model_activation(m, l);
        double sum = 0, sq = 0;
        int dead = 0;
        for (int j = 0; j < w; ++j) {
            int alive = 0;
            for (int i = 0; i < b; ++i) {
                const float v = a[(size_t)i * w + j];
                sum += v, sq += (double)v * v;
                alive |= v != 0.0f;
            }
            dead += !alive;
        }
        const double n = (double)b * w, mean = sum / n;
        e->act_mean[l] = mean;
        e->act_std[l] = sqrt(fmax(sq / n - mean * mean, 0.0));
        e->dead_frac[l] = (double)dead / w;
    }
}

void nd_monitor_after(nd_trainer *tr, nd_epoch_stats *e) {
    const nd_model *m = &tr->model;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_span w = m->layer[l].w;
        double du = 0, ww = 0;
        for (size_t i = w.offset; i < w.offset + w.length; ++i) {
            const double d = (double)m->param[i] - tr->monitor_prev[i];
            du += d * d;
            ww += (double)tr->monitor_prev[i] * tr->monitor_prev[i];
        }
        e->update_ratio[l] = ww > 0 ? sqrt(du / ww) : NAN;
    }
}
