#include "runtime/quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace accllm {
namespace {

// In-place lower Cholesky factor of a symmetric positive definite n x n matrix.
bool Cholesky(std::vector<double>& a, int n) {
  for (int j = 0; j < n; ++j) {
    double d = a[static_cast<std::size_t>(j) * n + j];
    for (int k = 0; k < j; ++k) d -= a[static_cast<std::size_t>(j) * n + k] * a[static_cast<std::size_t>(j) * n + k];
    if (!(d > 0)) return false;
    d = std::sqrt(d);
    a[static_cast<std::size_t>(j) * n + j] = d;
    for (int i = j + 1; i < n; ++i) {
      double s = a[static_cast<std::size_t>(i) * n + j];
      for (int k = 0; k < j; ++k) s -= a[static_cast<std::size_t>(i) * n + k] * a[static_cast<std::size_t>(j) * n + k];
      a[static_cast<std::size_t>(i) * n + j] = s / d;
    }
    for (int k = j + 1; k < n; ++k) a[static_cast<std::size_t>(j) * n + k] = 0.0;
  }
  return true;
}

// H^-1 from its lower Cholesky factor L: H^-1 = L^-T L^-1.
std::vector<double> InverseFromCholesky(const std::vector<double>& l, int n) {
  std::vector<double> linv(static_cast<std::size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    linv[static_cast<std::size_t>(i) * n + i] = 1.0 / l[static_cast<std::size_t>(i) * n + i];
    for (int j = 0; j < i; ++j) {
      double s = 0.0;
      for (int k = j; k < i; ++k) s += l[static_cast<std::size_t>(i) * n + k] * linv[static_cast<std::size_t>(k) * n + j];
      linv[static_cast<std::size_t>(i) * n + j] = -s / l[static_cast<std::size_t>(i) * n + i];
    }
  }
  std::vector<double> inv(static_cast<std::size_t>(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      double s = 0.0;
      for (int k = i; k < n; ++k) s += linv[static_cast<std::size_t>(k) * n + i] * linv[static_cast<std::size_t>(k) * n + j];
      inv[static_cast<std::size_t>(i) * n + j] = inv[static_cast<std::size_t>(j) * n + i] = s;
    }
  }
  return inv;
}

}  // namespace

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, std::span<const double> gram,
                                        std::span<const uint8_t> keep, const GptqOptions& options) {
  if (absl::Status s = ValidateW2Shape(shape); !s.ok()) return s;
  const int rows = shape.rows, n = shape.cols;
  if (w.size() != static_cast<std::size_t>(rows) * n || gram.size() != static_cast<std::size_t>(n) * n) {
    return absl::InvalidArgumentError("GPTQ: weight or Gram matrix size does not match the shape");
  }
  if (shape.sparse24 != !keep.empty()) return absl::InvalidArgumentError("GPTQ: a 2:4 mask must be given exactly for sparse shapes");

  // Damped Hessian; inputs that never fire ("dead" columns) get a unit diagonal and zero weight.
  std::vector<double> h(gram.begin(), gram.end());
  std::vector<double> work(w.begin(), w.end());
  double mean_diag = 0;
  for (int j = 0; j < n; ++j) mean_diag += h[static_cast<std::size_t>(j) * n + j];
  mean_diag = std::max(mean_diag / n, 1e-12);
  for (int j = 0; j < n; ++j) {
    double& d = h[static_cast<std::size_t>(j) * n + j];
    if (d == 0.0) {
      d = 1.0;
      for (int r = 0; r < rows; ++r) work[static_cast<std::size_t>(r) * n + j] = 0.0;
    }
    d += options.damp * mean_diag;
  }
  if (!Cholesky(h, n)) return absl::FailedPreconditionError("GPTQ: the Hessian is not positive definite");
  std::vector<double> u = InverseFromCholesky(h, n);
  if (!Cholesky(u, n)) return absl::FailedPreconditionError("GPTQ: the inverse Hessian is not positive definite");
  // u now holds lower L with H^-1 = L L^T; GPTQ uses the upper factor U = L^T: U[j][k] = L[k][j].

  W2Matrix m(shape);
  std::vector<W2GroupParams> params(rows);
  std::vector<float> values;
  std::vector<int> kept_before(static_cast<std::size_t>(rows) * (n / 4 + 1), 0);
  for (int j = 0; j < n; ++j) {
    const int g = j / shape.group_size;
    if (j % shape.group_size == 0) {
      const int end = std::min(n, j + shape.group_size);
      for (int r = 0; r < rows; ++r) {
        values.clear();
        for (int c = j; c < end; ++c) {
          if (keep.empty() || keep[static_cast<std::size_t>(r) * n + c]) values.push_back(static_cast<float>(work[static_cast<std::size_t>(r) * n + c]));
        }
        params[r] = ChooseW2Params(values);
        SetW2Params(m, r, g, params[r]);
      }
    }
    const double ujj = u[static_cast<std::size_t>(j) * n + j];
    for (int r = 0; r < rows; ++r) {
      double& wj = work[static_cast<std::size_t>(r) * n + j];
      double quantized = 0.0;
      const bool kept = keep.empty() || keep[static_cast<std::size_t>(r) * n + j];
      if (kept) {
        const uint8_t code = QuantizeW2Value(static_cast<float>(wj), params[r]);
        quantized = DequantizeW2Value(code, params[r]);
        if (shape.sparse24) {
          int& slot = kept_before[static_cast<std::size_t>(r) * (n / 4 + 1) + j / 4];
          SetW2Code(m, r, 2 * (j / 4) + slot, code, static_cast<uint8_t>(j % 4));
          ++slot;
        } else {
          SetW2Code(m, r, j, code);
        }
      }
      const double err = (wj - quantized) / ujj;
      double* row = work.data() + static_cast<std::size_t>(r) * n;
      for (int k = j + 1; k < n; ++k) row[k] -= err * u[static_cast<std::size_t>(k) * n + j];
      wj = quantized;
    }
  }
  return m;
}

double RelativeOutputError(std::span<const float> w, const W2View& q, std::span<const double> gram) {
  const int rows = q.shape.rows, n = q.shape.cols;
  std::vector<float> qrow(n);
  std::vector<double> d(n);
  double err = 0, ref = 0;
  for (int r = 0; r < rows; ++r) {
    DequantizeW2Row(q, r, qrow);
    const float* wr = w.data() + static_cast<std::size_t>(r) * n;
    for (int j = 0; j < n; ++j) d[j] = wr[j] - qrow[j];
    for (int i = 0; i < n; ++i) {
      const double* hrow = gram.data() + static_cast<std::size_t>(i) * n;
      double hd = 0, hw = 0;
      for (int j = 0; j < n; ++j) {
        hd += hrow[j] * d[j];
        hw += hrow[j] * wr[j];
      }
      err += d[i] * hd;
      ref += wr[i] * hw;
    }
  }
  return ref > 0 ? err / ref : 0.0;
}

}  // namespace accllm
