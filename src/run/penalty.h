/* Penalties and clipping of a summed gradient: weight decay, L1 and value
 * clipping over any part of the trainable prefix, the norm clip over all of
 * it. Shared by every exchange and by the parameter-server driver; reads the
 * model and the options it is given, nothing else. */
#ifndef NNDIST_PENALTY_H
#define NNDIST_PENALTY_H

#include <stdbool.h>
#include <stddef.h>

#include "nndist/model.h"

typedef struct {
    float weight_decay;   /* coupled L2 added to the gradient (0 with adamw, which decays in the optimizer) */
    float l1;             /* L1 on the same spans */
    float clip_value;     /* clamp each averaged value to [-v, v] (0: off) */
    float clip_norm;      /* scale the averaged gradient to this global norm (0: off) */
    bool regularize_bias; /* the biases are penalized too */
} nd_penalty;

/* 1 if weight decay and L1 act on tensor t: the weights (dense,
 * convolution and projection), and the biases with regularize_bias. */
int nd_penalty_covers(const nd_penalty *p, const nd_tensor *t);

/* What clipping did to one step's gradient. */
typedef struct {
    double before;  /* the norm before clipping (with the penalties), or NaN when not asked for and
                       --clip-norm is off */
    double after;   /* the norm of what the optimizer applies, or NaN when not asked for */
    size_t clamped; /* --clip-value: values clamped */
    bool clipped;   /* --clip-norm or --clip-value changed the gradient */
} nd_clip_figures;

/* Decay, L1 and value clipping of m->grad[lo, hi) (clipped to the trainable
 * prefix past a frozen base), a sum over `samples`; returns the scale the optimizer applies
 * before any norm clip: 1/samples, or 1 after value clipping. Unless
 * sq_before is NULL, *sq_before = the sum of squares of the scaled
 * gradient before value clipping (one more pass); *clamped (or NULL) =
 * the values value clipping changed. */
float nd_penalty_apply(const nd_penalty *p, nd_model *m, int samples, size_t lo, size_t hi, double *sq_before,
                       size_t *clamped);

/* nd_penalty_apply over the whole trainable prefix, then the norm clip;
 * returns the scale the optimizer applies and fills *clip (the norms only
 * with want_norms: a pass or two more over the gradient). */
float nd_penalty_scale_all(const nd_penalty *p, nd_model *m, int samples, bool want_norms, nd_clip_figures *clip);

#endif
