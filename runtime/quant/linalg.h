// Dense linear algebra for quantization-time code (calibration, GPTQ, block reconstruction), on
// OpenBLAS and its LAPACK: the only place that knows which BLAS it is. Row-major throughout:
//
//   C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C
//
// with op(X) = X or X^T, and leading dimensions (row strides) lda, ldb, ldc.
#pragma once

#include <string>

namespace accllm {

enum class Trans { kNo, kYes };

void Gemm(Trans trans_a, Trans trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc);
void Gemm(Trans trans_a, Trans trans_b, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
          int ldb, double beta, double* c, int ldc);

// The lower triangle of C (n x n) = A^T A, A being k x n: a Gram matrix. The strict upper triangle
// of C is left as it was.
void GramLower(int n, int k, const float* a, int lda, float* c, int ldc);

// In place, for a symmetric positive definite n x n matrix: its lower Cholesky factor L (A = L L^T),
// the strict upper triangle set to zero. False if A is not positive definite (A is then undefined).
bool CholeskyLower(double* a, int n);
bool CholeskyLower(float* a, int n);

// B (m x n) := B U^T in place, for an upper triangular n x n U (its strict lower triangle is not
// read): half the work of a general product.
void TimesUpperTransposed(int m, int n, const float* u, float* b);

// Threads the products may use (OpenBLAS's own pool); 0: one per hardware thread. Products called
// from several threads at once need 1 here.
void SetGemmThreads(int threads);
int GemmThreads();

// The BLAS the products run on and the kernels it picked for this CPU ("OpenBLAS 0.3.21
// DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64"), and whether $OPENBLAS_CORETYPE chose them:
// on a Zen 5, Debian's 0.3.21 picks its AVX-512 kernels by itself, and calibration runs 1.4x
// faster on them than on the Haswell ones an environment may force.
std::string GemmLibrary();

// Sets the products' threads for the rest of a scope, then restores them.
class ScopedGemmThreads {
 public:
  explicit ScopedGemmThreads(int threads) : previous_(GemmThreads()) { SetGemmThreads(threads); }
  ~ScopedGemmThreads() { SetGemmThreads(previous_); }
  ScopedGemmThreads(const ScopedGemmThreads&) = delete;
  ScopedGemmThreads& operator=(const ScopedGemmThreads&) = delete;

 private:
  int previous_;
};

}  // namespace accllm
