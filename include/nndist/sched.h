/* Learning rate (linear scaling and warmup) and gradient clipping. */
#ifndef NNDIST_SCHED_H
#define NNDIST_SCHED_H

#include <stddef.h>

typedef struct {
    float base_lr;      /* --lr: the rate at ref_batch samples per step */
    int ref_batch;      /* --ref-batch */
    int global_batch;   /* samples per step over all ranks */
    long warmup_steps;  /* --warmup-steps */
} nd_lr_schedule;

/* Peak rate: base_lr * global_batch / ref_batch (Goyal et al. 2017). */
float nd_lr_peak(const nd_lr_schedule *s);

/* Rate for 0-based step t: linear from base_lr at t = 0 to the peak at
 * t = warmup_steps, then the peak. */
float nd_lr_at(const nd_lr_schedule *s, long step);

/* Momentum schedule: mu0 moving linearly to mu1 over `span` epochs, then
 * mu1; `epoch` is fractional progress (steps taken / steps per epoch).
 * mu1 < 0 disables the schedule (mu0 throughout). */
float nd_momentum_at(float mu0, float mu1, float span, double epoch);

/* Clamps each of g (n) to [-limit, limit] after multiplying by scale; writes
 * the scaled values back. Used for --clip-value. */
void nd_clip_by_value(float *g, size_t n, float scale, float limit);

/* L2 norm of scale * g (n), accumulated in double. */
double nd_grad_norm(const float *g, size_t n, float scale);

/* Factor that brings a gradient of L2 norm `norm` down to at most `max_norm`
 * (1 when it is already within, or when max_norm <= 0 disables clipping). */
float nd_clip_norm_factor(double norm, float max_norm);

#endif
