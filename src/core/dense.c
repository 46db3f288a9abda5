#include "nndist/blas.h"
#include "nndist/layers.h"
#include "activation_rows.h"

void nd_dense_forward(float *out, const float *in, const float *w, const float *b, nd_activation act, int batch,
                      int in_dim, int out_dim) {
    /* out = in * w^T: the transposed operand avoids any explicit transpose. */
    nd_sgemm(false, true, batch, out_dim, in_dim, 1.0f, in, in_dim, w, in_dim, 0.0f, out, out_dim);
    for (int i = 0; i < batch; ++i) nd_bias_act_row(out + (size_t)i * out_dim, b, out_dim, act);
}

void nd_dense_backward_bias(float *dout, const float *out, float *db, nd_activation act, int batch, int out_dim) {
    for (int i = 0; i < batch; ++i)
        nd_act_grad_bias_row(dout + (size_t)i * out_dim, out + (size_t)i * out_dim, db, out_dim, act);
}

void nd_dense_backward_weights(float *dw, const float *dout, const float *in, int batch, int in_dim, int out_dim,
                               int r0, int r1) {
    /* dw[r0:r1] (rows x in) += dz[:, r0:r1]^T (rows x batch) * in (batch x in):
     * a column block of dz is a plain offset with leading dimension out_dim. */
    if (r1 > r0)
        nd_sgemm(true, false, r1 - r0, in_dim, batch, 1.0f, dout + r0, out_dim, in, in_dim, 1.0f,
                 dw + (size_t)r0 * in_dim, in_dim);
}

void nd_dense_backward_input(float *din, const float *dout, const float *w, int batch, int in_dim, int out_dim) {
    /* din (batch x in) = dz (batch x out) * w (out x in) */
    nd_sgemm(false, false, batch, in_dim, out_dim, 1.0f, dout, out_dim, w, in_dim, 0.0f, din, in_dim);
}

void nd_dense_backward(float *din, float *dw, float *db, float *dout, const float *out, const float *in, const float *w,
                       nd_activation act, int batch, int in_dim, int out_dim) {
    nd_dense_backward_bias(dout, out, db, act, batch, out_dim);
    nd_dense_backward_weights(dw, dout, in, batch, in_dim, out_dim, 0, out_dim);
    if (din) nd_dense_backward_input(din, dout, w, batch, in_dim, out_dim);
}
