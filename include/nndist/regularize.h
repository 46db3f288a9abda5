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

/* w (rows x cols): every row (one neuron's incoming weights) whose L2 norm
 * exceeds c is scaled back to norm c. Returns how many rows were clamped. */
int nd_reg_max_norm(float *w, int rows, int cols, float c);

#endif
