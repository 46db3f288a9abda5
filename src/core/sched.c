#include "nndist/sched.h"

#include <math.h>

float nd_lr_peak(const nd_lr_schedule *s) {
    return (float)((double)s->base_lr * s->global_batch / s->ref_batch);
}

float nd_lr_at(const nd_lr_schedule *s, long step) {
    const double peak = nd_lr_peak(s);
    if (s->warmup_steps <= 0 || step >= s->warmup_steps) return (float)peak;
    const double frac = (double)step / (double)s->warmup_steps;
    return (float)(s->base_lr + (peak - s->base_lr) * frac);
}

float nd_momentum_at(float mu0, float mu1, float span, double epoch) {
    if (mu1 < 0.0f || span <= 0.0f) return mu0;
    const double f = epoch >= span ? 1.0 : epoch / span;
    return (float)(mu0 + (mu1 - mu0) * f);
}

void nd_clip_by_value(float *g, size_t n, float scale, float limit) {
    for (size_t i = 0; i < n; ++i) {
        float x = g[i] * scale;
        g[i] = x > limit ? limit : (x < -limit ? -limit : x);
    }
}

double nd_grad_norm(const float *g, size_t n, float scale) {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += (double)g[i] * g[i];
    return sqrt(s) * fabs((double)scale);
}

float nd_clip_norm_factor(double norm, float max_norm) {
    if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
    return (float)(max_norm / norm);
}
