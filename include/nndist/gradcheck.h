/* Numerical gradient check (CS231n, "Neural Networks Part 3"): the model's
 * float backprop against centred differences of an independent
 * double-precision forward pass, per parameter group. */
#ifndef NNDIST_GRADCHECK_H
#define NNDIST_GRADCHECK_H

#include <stdint.h>
#include <stdio.h>

#include "nndist/loss.h"
#include "nndist/model.h"

#define ND_GRADCHECK_MAX_GROUPS (ND_MAX_TENSORS + 2)

/* The pass mark. CS231n's thresholds are for double throughout: > 1e-2
 * wrong, 1e-4..1e-2 uncomfortable, < 1e-4 fine with kinks, < 1e-7 good.
 * Here the analytic side is the float32 backprop that training runs; it
 * lands at 1e-7..1e-4 (sums over the batch, batch norm's centring), while a
 * wrong backward is off by 1e-2 or more. */
#define ND_GRADCHECK_FAIL_ABOVE 1e-3

typedef struct {
    char name[32];  /* a tensor's name ("dense0/W", "conv1/b", "bn1/gamma"), "l2 penalty", ... */
    int checked;    /* parameters compared */
    int kinks;      /* sampled but skipped: x +- h fell on two sides of a kink (CS231n:
                       a ReLU, maxout or hinge 'winner' changed), so the difference
                       quotient is not the derivative */
    double max_rel; /* worst |a - n| / max(|a|, |n|), 0 when both are below 1e-6 of the
                       largest analytic gradient, the denominator at least 1e-4 of it:
                       float32 rounding leaves about 1e-7 of that scale in any entry */
} nd_gradcheck_group;

/* Double-precision loss (sum over the batch) of the model's architecture
 * with parameters p (num_params) on x (batch x input_dim) against labels or
 * targets, on a training pass (batch statistics; dropout with the masks the
 * model drew in its latest training forward, which must be of this batch).
 * kinks (may be NULL) receives a hash of the side of every kink (ReLU and
 * ELU signs, maxout and hinge winners, L1 signs) the pass went through. */
double nd_gradcheck_loss(const nd_model *m, const double *p, const float *x, int batch, nd_loss_kind loss,
                         const int *labels, const float *targets, uint64_t *kinks);

/* Checks `grad` (num_params; the analytic gradient of the summed loss) at
 * the model's parameters: per group, up to `samples` parameters chosen by
 * seed (every one if the group is smaller), centred differences with step
 * h in double. l2 and l1 > 0 add a separate check of the penalties
 * 0.5*l2*|w|^2 and l1*|w| on the weights, whose analytic gradients are
 * nd_reg_l2 and nd_reg_l1. Fills groups and returns their count. */
int nd_gradcheck_run(const nd_model *m, const float *grad, const float *x, int batch, nd_loss_kind loss,
                     const int *labels, const float *targets, int samples, uint64_t seed, double h, double l2,
                     double l1, nd_gradcheck_group *groups);

/* The same, also writing to log (unless NULL) one line per sampled
 * parameter: group, index in its tensor, analytic, numeric, relative error
 * (or that a kink lay within h). */
int nd_gradcheck_run_log(const nd_model *m, const float *grad, const float *x, int batch, nd_loss_kind loss,
                         const int *labels, const float *targets, int samples, uint64_t seed, double h, double l2,
                         double l1, nd_gradcheck_group *groups, FILE *log);

#endif
