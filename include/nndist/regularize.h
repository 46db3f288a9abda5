/* Weight regularization beyond the coupled L2 term: L1 (with L2, the
 * elastic net) as gradient terms, and the max-norm constraint on each
 * neuron's incoming weights. Biases are never passed here. */
#ifndef NNDIST_REGULARIZE_H
#define NNDIST_REGULARIZE_H

#include <stddef.h>

/* g (n) += coeff * w (n): the gradient of 0.5 * coeff * |w|^2. */
void nd_reg_l2(float *g, const float *w, size_t n, float coeff);

/* g (n) += coeff * sign(w) (n): the gradient of coeff * |w|_1
 * (0 where w is exactly 0). */
void nd_reg_l1(float *g, const float *w, size_t n, float coeff);

/* Sets g (n) to the gradient of a penalty at w (n). */
typedef void (*nd_reg_gradient_fn)(void *ctx, const float *w, float *g);

/* The value at w (n), relative to w = 0, of a penalty known only by the
 * gradient `grad` computes: the integral of grad(t w) . w over t in [0, 1]
 * by two-point Gauss-Legendre, exact for a gradient linear in w (L2) or
 * constant along the ray (L1) and their sum; no node at t = 0, where L1's
 * gradient is 0. scratch: 2n floats. So a check of "the penalty raises the
 * loss" goes through the code that trains, not a formula beside it. */
double nd_reg_value_from_gradient(nd_reg_gradient_fn grad, void *ctx, const float *w, size_t n, float *scratch);

/* w (rows x cols): every row (one neuron's incoming weights) whose L2 norm
 * exceeds c is scaled back to norm c. Returns how many rows were clamped. */
int nd_reg_max_norm(float *w, int rows, int cols, float c);

#endif
