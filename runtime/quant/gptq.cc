#include "runtime/quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

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

// The inverse of an upper triangular n x n matrix, row by row from the bottom: row i of U = V^-1
// is (e_i - sum_{k > i} V[i][k] U[k]) / V[i][i], a sum of contiguous rows.
std::vector<double> InverseOfUpper(const std::vector<double>& v, int n) {
  std::vector<double> u(static_cast<std::size_t>(n) * n, 0.0);
  for (int i = n - 1; i >= 0; --i) {
    double* row = u.data() + static_cast<std::size_t>(i) * n;
    row[i] = 1.0;
    for (int k = i + 1; k < n; ++k) {
      const double f = v[static_cast<std::size_t>(i) * n + k];
      const double* uk = u.data() + static_cast<std::size_t>(k) * n;
      for (int j = k; j < n; ++j) row[j] -= f * uk[j];
    }
    const double d = v[static_cast<std::size_t>(i) * n + i];
    for (int j = i; j < n; ++j) row[j] /= d;
  }
  return u;
}

}  // namespace

absl::StatusOr<GptqHessian> PrepareGptqHessian(std::span<const double> gram, int n, const GptqOptions& options) {
  if (gram.size() != static_cast<std::size_t>(n) * n) return absl::InvalidArgumentError("GPTQ: the Gram matrix is not n x n");
  // Damped Hessian; inputs that never fire ("dead" columns) get a unit diagonal and zero weight.
  GptqHessian hessian;
  hessian.n = n;
  hessian.dead.assign(n, 0);
  hessian.importance.resize(n);
  for (int j = 0; j < n; ++j) hessian.importance[j] = static_cast<float>(gram[static_cast<std::size_t>(j) * n + j]);
  std::vector<double> h(gram.begin(), gram.end());
  if (options.act_order) {
    hessian.order.resize(n);
    for (int j = 0; j < n; ++j) hessian.order[j] = j;
    std::stable_sort(hessian.order.begin(), hessian.order.end(), [&](int a, int b) {
      return gram[static_cast<std::size_t>(a) * n + a] > gram[static_cast<std::size_t>(b) * n + b];
    });
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        h[static_cast<std::size_t>(i) * n + j] = gram[static_cast<std::size_t>(hessian.order[i]) * n + hessian.order[j]];
      }
    }
  }
  double mean_diag = 0;
  for (int j = 0; j < n; ++j) mean_diag += h[static_cast<std::size_t>(j) * n + j];
  mean_diag = std::max(mean_diag / n, 1e-12);
  for (int j = 0; j < n; ++j) {
    double& d = h[static_cast<std::size_t>(j) * n + j];
    if (d == 0.0) {
      d = 1.0;
      hessian.dead[j] = 1;
    }
    d += options.damp * mean_diag;
  }
  // GPTQ walks U, the upper Cholesky factor of H^-1 (H^-1 = U^T U), row by row. With J the
  // order reversal, chol(J H J) = L gives H = V V^T with V = J L J upper, so U = V^-1: one
  // Cholesky and one triangular inverse.
  std::vector<double> reversed(h.size());
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) reversed[static_cast<std::size_t>(i) * n + j] = h[static_cast<std::size_t>(n - 1 - i) * n + (n - 1 - j)];
  }
  if (!Cholesky(reversed, n)) return absl::FailedPreconditionError("GPTQ: the Hessian is not positive definite");
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) h[static_cast<std::size_t>(i) * n + j] = reversed[static_cast<std::size_t>(n - 1 - i) * n + (n - 1 - j)];
  }
  hessian.upper = InverseOfUpper(h, n);
  return hessian;
}

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, std::span<const double> gram,
                                        std::span<const uint8_t> keep, const GptqOptions& options) {
  ASSIGN_OR_RETURN(GptqHessian hessian, PrepareGptqHessian(gram, shape.cols, options));
  return QuantizeW2Gptq(w, shape, hessian, keep, nullptr);
}

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, const GptqHessian& hessian,
                                        std::span<const uint8_t> keep, ThreadPool* pool) {
  if (absl::Status s = ValidateW2Shape(shape); !s.ok()) return s;
  const int rows = shape.rows, n = shape.cols;
  if (w.size() != static_cast<std::size_t>(rows) * n || hessian.n != n) {
    return absl::InvalidArgumentError("GPTQ: weight or Hessian size does not match the shape");
  }
  if (shape.sparse24 != !keep.empty()) return absl::InvalidArgumentError("GPTQ: a 2:4 mask must be given exactly for sparse shapes");

  // Rows are independent (each has its own groups' parameters), so they run in parallel; every
  // code byte and parameter belongs to one row.
  W2Matrix m(shape);
  const bool static_groups = !hessian.order.empty();
  const auto column = [&](int i) { return static_groups ? hessian.order[i] : i; };
  const auto quantize_rows = [&](int64_t begin, int64_t end) {
    std::vector<double> work(n);  // in the order columns are quantized
    std::vector<float> values, importance;
    std::vector<W2GroupParams> params(shape.groups());
    const auto choose = [&](int r, int g, const auto& value_of) {
      values.clear();
      importance.clear();
      for (int c = g * shape.group_size; c < std::min(n, (g + 1) * shape.group_size); ++c) {
        if (keep.empty() || keep[static_cast<std::size_t>(r) * n + c]) {
          values.push_back(static_cast<float>(value_of(c)));
          importance.push_back(hessian.importance[c]);
        }
      }
      params[g] = ChooseW2Params(values, importance);
      SetW2Params(m, r, g, params[g]);
    };
    for (int64_t row = begin; row < end; ++row) {
      const int r = static_cast<int>(row);
      const float* wr = w.data() + static_cast<std::size_t>(r) * n;
      const uint8_t* row_keep = keep.empty() ? nullptr : keep.data() + static_cast<std::size_t>(r) * n;
      for (int i = 0; i < n; ++i) work[i] = hessian.dead[column(i)] ? 0.0 : wr[column(i)];
      if (static_groups) {
        for (int g = 0; g < shape.groups(); ++g) choose(r, g, [&](int c) { return hessian.dead[c] ? 0.0f : wr[c]; });
      }
      for (int i = 0; i < n; ++i) {
        const int j = column(i), g = j / shape.group_size;
        // Column order: a group's parameters come from its weights as updated so far (i == j).
        if (!static_groups && j % shape.group_size == 0) choose(r, g, [&](int c) { return work[c]; });
        double quantized = 0.0;
        if (row_keep == nullptr || row_keep[j]) {
          const uint8_t code = QuantizeW2Value(static_cast<float>(work[i]), params[g]);
          quantized = DequantizeW2Value(code, params[g]);
          if (shape.sparse24) {
            int slot = 0;  // kept weights before j in its group of 4
            for (int c = j / 4 * 4; c < j; ++c) slot += row_keep[c];
            SetW2Code(m, r, 2 * (j / 4) + slot, code, static_cast<uint8_t>(j % 4));
          } else {
            SetW2Code(m, r, j, code);
          }
        }
        const double* u = hessian.upper.data() + static_cast<std::size_t>(i) * n;
        const double err = (work[i] - quantized) / u[i];
        for (int k = i + 1; k < n; ++k) work[k] -= err * u[k];
        work[i] = quantized;
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(rows, quantize_rows);
  } else {
    quantize_rows(0, rows);
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
