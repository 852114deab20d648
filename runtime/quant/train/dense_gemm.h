// fp32 matrix products for training-time code (block reconstruction), on OpenBLAS: the only
// place that knows which BLAS it is. Row-major throughout:
//
//   C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C
//
// with op(X) = X or X^T, and leading dimensions (row strides) lda, ldb, ldc.
#pragma once

namespace accllm {

enum class Trans { kNo, kYes };

void Gemm(Trans trans_a, Trans trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc);

// Threads the products may use (OpenBLAS's own pool); 0: one per hardware thread.
void SetGemmThreads(int threads);

}  // namespace accllm
