#include "runtime/quant/linalg.h"

#include <cblas.h>

#include <cstddef>
#include <cstdlib>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

// LAPACK's Fortran entry points, which OpenBLAS exports; Debian's libopenblas-dev ships no C
// header for them (lapacke.h is another package and another library).
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info);
}

namespace accllm {
namespace {

CBLAS_TRANSPOSE ToCblas(Trans t) { return t == Trans::kYes ? CblasTrans : CblasNoTrans; }

}  // namespace

void Gemm(Trans trans_a, Trans trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ToCblas(trans_a), ToCblas(trans_b), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void Gemm(Trans trans_a, Trans trans_b, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
          int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ToCblas(trans_a), ToCblas(trans_b), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void GramLower(int n, int k, const float* a, int lda, float* c, int ldc) {
  cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, n, k, 1.0f, a, lda, 0.0f, c, ldc);
}

// LAPACK is column-major: a row-major matrix is its transpose there. So the row-major lower factor
// is LAPACK's upper one ("U": A = U^T U), and a row-major upper triangle is LAPACK's lower one.
namespace {

template <typename T, typename Factor>
bool CholeskyLowerWith(Factor factor, T* a, int n) {
  int info = 0;
  factor("U", &n, a, &n, &info);
  if (info != 0) return false;
  for (int i = 0; i < n; ++i) {
    for (int j = i + 1; j < n; ++j) a[static_cast<std::size_t>(i) * n + j] = T{0};
  }
  return true;
}

}  // namespace

bool CholeskyLower(double* a, int n) { return CholeskyLowerWith(dpotrf_, a, n); }
bool CholeskyLower(float* a, int n) { return CholeskyLowerWith(spotrf_, a, n); }

void TimesUpperTransposed(int m, int n, const float* u, float* b) {
  cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit, m, n, 1.0f, u, n, b, n);
}

void SetGemmThreads(int threads) {
  openblas_set_num_threads(threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
}

int GemmThreads() { return openblas_get_num_threads(); }

std::string GemmLibrary() {
  std::string name(absl::StripAsciiWhitespace(openblas_get_config()));  // version, build options, kernels
  if (const char* forced = std::getenv("OPENBLAS_CORETYPE"); forced != nullptr && *forced != '\0') {
    absl::StrAppend(&name, " (chosen by OPENBLAS_CORETYPE=", forced, ")");
  }
  return name;
}

}  // namespace accllm
