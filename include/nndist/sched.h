/* Learning rate (linear scaling and warmup) and gradient clipping. */
#ifndef NNDIST_SCHED_H
#define NNDIST_SCHED_H

#include <stddef.h>

typedef enum {
    ND_SCHED_CONSTANT = 0,
    ND_SCHED_STEP,    /* x gamma at each milestone */
    ND_SCHED_EXP,     /* exp(-k e) */
    ND_SCHED_INV,     /* 1 / (1 + k e) */
    ND_SCHED_SQRT,    /* 1 / sqrt(1 + k e) */
    ND_SCHED_INVSQRT, /* sqrt(W / t) after warmup W (Vaswani et al. 2017) */
    ND_SCHED_LINEAR,  /* to zero at the last step */
    ND_SCHED_COSINE,  /* to lr_min at the last step */
    ND_SCHED_SGDR,    /* cosine with warm restarts (Loshchilov & Hutter 2017) */
    ND_SCHED_GBC,     /* linear to floor x peak at tau, then constant (GBC16 8.3.1) */
    ND_SCHED_PLATEAU, /* x gamma when the validation metric stalls */
    ND_SCHED_ONECYCLE /* up to the peak, then below the start (Smith 2018) */
} nd_sched_kind;

#define ND_MAX_MILESTONES 16

/* Every rate is the peak (linear scaling) times a factor of the step. The
 * schedule runs on the steps after the warmup (its step 0 is step W; step's
 * milestones and invsqrt count from step 0 of the run). During the warmup,
 * step s < W runs at target x (start + (1 - start) (s + 1) / W), target
 * being the schedule's rate at step W, so the first step is not wasted at
 * rate 0 and step W - 1 reaches the target; with warmup_goyal, at
 * from + (target - from) s / W, from = base_lr x target / peak (Goyal et
 * al. 2017: from --lr to the scaled peak). Time arguments are in steps; `e`
 * above is epochs since the warmup ended. */
typedef struct {
    float base_lr;      /* --lr: the rate at ref_batch samples per step */
    int ref_batch;      /* --ref-batch */
    int global_batch;   /* samples per step over all ranks */
    long warmup_steps;  /* --warmup-steps */
    float warmup_start; /* --warmup-start: first warmup rate / target, in [0, 1) */
    int warmup_goyal;   /* --warmup-goyal: ramp from base_lr instead */
    nd_sched_kind kind;
    long steps_per_epoch, total_steps;
    float gamma; /* step, plateau */
    int num_milestones;
    long milestones[ND_MAX_MILESTONES]; /* step: absolute steps */
    float k;                            /* exp, inv, sqrt: per epoch */
    float lr_min;                       /* cosine, sgdr */
    float sgdr_t0, sgdr_mult;           /* sgdr: first cycle (epochs), growth */
    long gbc_tau;                       /* gbc: steps after warmup to reach the floor */
    float gbc_floor;                    /* gbc: floor as a fraction of the peak */
    float onecycle_pct, onecycle_div, onecycle_final_div;
    double plateau_scale; /* plateau: current factor (state) */
} nd_lr_schedule;

/* Parses a schedule name; 0 or -1. */
int nd_sched_parse(const char *name, nd_sched_kind *kind);
/* The names of the schedules, indexed by nd_sched_kind, NULL-terminated. */
extern const char *const nd_sched_names[];
const char *nd_sched_name(nd_sched_kind kind);

/* Peak rate: base_lr * global_batch / ref_batch (Goyal et al. 2017). */
float nd_lr_peak(const nd_lr_schedule *s);

/* Rate for 0-based step t. */
float nd_lr_at(const nd_lr_schedule *s, long step);

/* When the warmup of s changes nothing, or the run ends before it does:
 * writes why in one line to why (n bytes) and returns 1; else 0. */
int nd_lr_warmup_issue(const nd_lr_schedule *s, char *why, size_t n);

/* Reduce-on-plateau bookkeeping after an epoch's validation metric
 * (higher is better): after `patience` epochs without a new best, the
 * factor is multiplied by gamma. best/bad are the caller's state. */
void nd_lr_plateau_update(nd_lr_schedule *s, double metric, double *best, int *bad, int patience);

/* Momentum schedule: mu0 moving linearly to mu1 over `span` epochs, then
 * mu1; `epoch` is fractional progress (steps taken / steps per epoch).
 * mu1 < 0 disables the schedule (mu0 throughout). */
float nd_momentum_at(float mu0, float mu1, float span, double epoch);

/* Clamps each of g (n) to [-limit, limit] after multiplying by scale; writes
 * the scaled values back and returns how many were clamped. Used for
 * --clip-value. */
size_t nd_clip_by_value(float *g, size_t n, float scale, float limit);

/* L2 norm of scale * g (n), accumulated in double. */
double nd_grad_norm(const float *g, size_t n, float scale);

/* Factor that brings a gradient of L2 norm `norm` down to at most `max_norm`
 * (1 when it is already within, or when max_norm <= 0 disables clipping). */
float nd_clip_norm_factor(double norm, float max_norm);

#endif
