#include "nndist/sched.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *const nd_sched_names[] = {[ND_SCHED_CONSTANT] = "constant",
                                      [ND_SCHED_STEP] = "step",
                                      [ND_SCHED_EXP] = "exp",
                                      [ND_SCHED_INV] = "inv",
                                      [ND_SCHED_SQRT] = "sqrt",
                                      [ND_SCHED_INVSQRT] = "invsqrt",
                                      [ND_SCHED_LINEAR] = "linear",
                                      [ND_SCHED_COSINE] = "cosine",
                                      [ND_SCHED_SGDR] = "sgdr",
                                      [ND_SCHED_GBC] = "gbc",
                                      [ND_SCHED_PLATEAU] = "plateau",
                                      [ND_SCHED_ONECYCLE] = "onecycle",
                                      NULL};

int nd_sched_parse(const char *name, nd_sched_kind *kind) {
    for (int k = 0; k < (int)(sizeof nd_sched_names / sizeof nd_sched_names[0]) - 1; ++k)
        if (!strcmp(name, nd_sched_names[k])) {
            *kind = (nd_sched_kind)k;
            return 0;
        }
    return -1;
}

const char *nd_sched_name(nd_sched_kind kind) {
    return (unsigned)kind + 1 < sizeof nd_sched_names / sizeof nd_sched_names[0] ? nd_sched_names[kind] : "?";
}

float nd_lr_peak(const nd_lr_schedule *s) { return (float)((double)s->base_lr * s->global_batch / s->ref_batch); }

static double half_cosine(double lo, double hi, double frac) {
    return lo + (hi - lo) * 0.5 * (1.0 + cos(3.141592653589793 * frac));
}

/* One-cycle (PyTorch's OneCycleLR, cosine) over `span` steps from t = 0:
 * from peak/div up to the peak over pct of them, then down to
 * peak/div/final_div. */
static double one_cycle(const nd_lr_schedule *s, double peak, long t, long span) {
    const double start = peak / s->onecycle_div, end = start / s->onecycle_final_div;
    const double up = s->onecycle_pct * (double)span;
    if (t < up) return half_cosine(peak, start, t / up);
    const double down = (double)span - up;
    const double frac = down > 0 ? ((double)t - up) / down : 1.0;
    return half_cosine(end, peak, frac > 1.0 ? 1.0 : frac);
}

/* The schedule's rate at step >= w (the warmup's length). */
static double scheduled(const nd_lr_schedule *s, double peak, long w, long step) {
    const long t = step - w;
    const double e = s->steps_per_epoch > 0 ? (double)t / (double)s->steps_per_epoch : 0.0;
    const long span = s->total_steps - w;
    const double frac = span > 0 ? (double)t / (double)span : 1.0;
    switch (s->kind) {
    case ND_SCHED_STEP: {
        double f = 1.0;
        for (int i = 0; i < s->num_milestones; ++i)
            if (step >= s->milestones[i]) f *= s->gamma;
        return peak * f;
    }
    case ND_SCHED_EXP: return peak * exp(-s->k * e);
    case ND_SCHED_INV: return peak / (1.0 + s->k * e);
    case ND_SCHED_SQRT: return peak / sqrt(1.0 + s->k * e);
    case ND_SCHED_INVSQRT: {
        const double w1 = w > 0 ? (double)w : 1.0;
        return peak * sqrt(w1 / ((double)step > w1 ? (double)step : w1));
    }
    case ND_SCHED_LINEAR: return peak * (frac < 1.0 ? 1.0 - frac : 0.0);
    case ND_SCHED_COSINE: return half_cosine(s->lr_min, peak, frac < 1.0 ? frac : 1.0);
    case ND_SCHED_SGDR: {
        double len = s->sgdr_t0, at = e;
        while (at >= len && len > 0) { /* find the current cycle */
            at -= len;
            len *= s->sgdr_mult;
        }
        return half_cosine(s->lr_min, peak, len > 0 ? at / len : 0.0);
    }
    case ND_SCHED_GBC: {
        const double a = s->gbc_tau > 0 ? ((double)t >= (double)s->gbc_tau ? 1.0 : (double)t / (double)s->gbc_tau)
                                        : 1.0;
        return (1.0 - a) * peak + a * s->gbc_floor * peak;
    }
    case ND_SCHED_PLATEAU: return peak * s->plateau_scale;
    case ND_SCHED_ONECYCLE: return one_cycle(s, peak, t, span);
    case ND_SCHED_CONSTANT: break;
    }
    return peak;
}

float nd_lr_at(const nd_lr_schedule *s, long step) {
    const double peak = nd_lr_peak(s);
    const long w = s->warmup_steps > 0 ? s->warmup_steps : 0;
    if (step >= w) return (float)scheduled(s, peak, w, step);
    const double target = scheduled(s, peak, w, w); /* where the warmup ends */
    if (s->warmup_goyal) {
        const double from = s->base_lr * (target / peak); /* --lr itself when the target is the peak */
        return (float)(from + (target - from) * (double)step / (double)w);
    }
    const double start = s->warmup_start;
    return (float)(target * (start + (1.0 - start) * (double)(step + 1) / (double)w));
}

int nd_lr_warmup_issue(const nd_lr_schedule *s, char *why, size_t n) {
    const long w = s->warmup_steps;
    if (w <= 0 && (s->warmup_goyal || s->warmup_start > 0.0f))
        snprintf(why, n, "--warmup-%s without --warmup-steps changes nothing", s->warmup_goyal ? "goyal" : "start");
    else if (w > 0 && s->warmup_goyal && s->global_batch == s->ref_batch)
        snprintf(why, n,
                 "--warmup-goyal ramps from --lr to the peak, here --lr too (batch per update %d = --ref-batch): "
                 "the warmup changes nothing (without --warmup-goyal it ramps from --warmup-start)",
                 s->global_batch);
    else if (w > 0 && s->total_steps > 0 && w >= s->total_steps)
        snprintf(why, n, "--warmup-steps %ld: the run has %ld steps, it ends before the warmup does", w,
                 s->total_steps);
    else return 0;
    return 1;
}

void nd_lr_plateau_update(nd_lr_schedule *s, double metric, double *best, int *bad, int patience) {
    if (metric > *best) {
        *best = metric;
        *bad = 0;
        return;
    }
    if (++*bad >= patience) {
        s->plateau_scale *= s->gamma;
        *bad = 0;
    }
}

float nd_momentum_at(float mu0, float mu1, float span, double epoch) {
    if (mu1 < 0.0f || span <= 0.0f) return mu0;
    const double f = epoch >= span ? 1.0 : epoch / span;
    return (float)(mu0 + (mu1 - mu0) * f);
}

size_t nd_clip_by_value(float *g, size_t n, float scale, float limit) {
    size_t clamped = 0;
    for (size_t i = 0; i < n; ++i) {
        float x = g[i] * scale;
        clamped += x > limit || x < -limit;
        g[i] = x > limit ? limit : (x < -limit ? -limit : x);
    }
    return clamped;
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
