/* The one wrapper around CBLAS: row-major single-precision GEMM and the
 * thread setting. No other file includes cblas.h, so the BLAS vendor can be
 * swapped here alone. */
#ifndef NNDIST_BLAS_H
#define NNDIST_BLAS_H

#include <stdbool.h>

/* C (m x n) = alpha * op(A) * op(B) + beta * C, all row-major.
 * op(A) is (m x k): A is (m x lda-wide) or, transposed, (k x lda-wide).
 * op(B) is (k x n): B is (k x ldb-wide) or, transposed, (n x ldb-wide). */
void nd_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
              int ldb, float beta, float *c, int ldc);

/* Sets the number of BLAS threads this process uses (>= 1). */
void nd_blas_set_threads(int threads);
int nd_blas_get_threads(void);

#endif
