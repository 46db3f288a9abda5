#include "nndist/blas.h"

#include <cblas.h>

void nd_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
              int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

void nd_blas_set_threads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

int nd_blas_get_threads(void) { return openblas_get_num_threads(); }
