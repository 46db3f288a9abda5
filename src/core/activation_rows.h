/* Private to the core: per-row fused passes used by dense.c. */
#ifndef NNDIST_ACTIVATION_ROWS_H
#define NNDIST_ACTIVATION_ROWS_H

#include "nndist/layers.h"

/* row (n) = act(row + b (n)), in place. */
void nd_bias_act_row(float *row, const float *b, int n, nd_activation act);

/* drow (n) *= act'(row (n)); db (n) += the result. */
void nd_act_grad_bias_row(float *drow, const float *row, float *db, int n, nd_activation act);

#endif
