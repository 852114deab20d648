#include "runtime/quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
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
  if (options.refit_scales) hessian.gram.assign(gram.begin(), gram.end());
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
  // dead[] is indexed by column; h may be in act-order.
  for (int j = 0; j < n; ++j) hessian.dead[j] = gram[static_cast<std::size_t>(j) * n + j] == 0.0 ? 1 : 0;
  for (int i = 0; i < n; ++i) {
    double& d = h[static_cast<std::size_t>(i) * n + i];
    if (d == 0.0) d = 1.0;
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

namespace {

// Refits row r's group scales s (zeros and codes fixed) to the least (w - C s)^T H (w - C s),
// where column g of C holds each code's level (W2Level) on group g's kept columns: a G x G least-squares
// problem. `codes` holds the row's code per column (kNoCode for pruned ones).
constexpr uint8_t kNoCode = 255;
void RefitRowScales(W2Matrix& m, int r, std::span<const float> w_row, std::span<const uint8_t> codes,
                    std::span<const W2GroupParams> params, const GptqHessian& hessian) {
  const int n = hessian.n, group = m.shape.group_size, groups = m.shape.groups();
  const auto h = [&](int i, int j) { return static_cast<double>(hessian.gram[static_cast<std::size_t>(i) * n + j]); };
  std::vector<double> c(n, 0.0), hw(n, 0.0);
  for (int j = 0; j < n; ++j) {
    if (codes[j] != kNoCode) c[j] = W2Level(codes[j], params[j / group].zero);
  }
  for (int i = 0; i < n; ++i) {
    double sum = 0;
    for (int j = 0; j < n; ++j) sum += h(i, j) * w_row[j];
    hw[i] = sum;
  }
  // A = C^T H C, b = C^T H w.
  std::vector<double> a(static_cast<std::size_t>(groups) * groups, 0.0), b(groups, 0.0), v(n);
  for (int g = 0; g < groups; ++g) {
    const int begin = g * group, end = std::min(n, begin + group);
    for (int i = 0; i < n; ++i) {
      double sum = 0;
      for (int j = begin; j < end; ++j) sum += h(i, j) * c[j];
      v[i] = sum;
    }
    for (int k = 0; k < groups; ++k) {
      double sum = 0;
      for (int i = k * group; i < std::min(n, (k + 1) * group); ++i) sum += c[i] * v[i];
      a[static_cast<std::size_t>(k) * groups + g] = sum;
    }
    for (int i = begin; i < end; ++i) b[g] += c[i] * hw[i];
  }
  // The error, up to the constant w^T H w, for scales s.
  const auto error = [&](std::span<const double> s) {
    double e = 0;
    for (int g = 0; g < groups; ++g) {
      double as = 0;
      for (int k = 0; k < groups; ++k) as += a[static_cast<std::size_t>(g) * groups + k] * s[k];
      e += s[g] * as - 2 * s[g] * b[g];
    }
    return e;
  };
  std::vector<double> old_s(groups), chol = a;
  for (int g = 0; g < groups; ++g) old_s[g] = params[g].scale;
  double trace = 0;
  for (int g = 0; g < groups; ++g) trace += a[static_cast<std::size_t>(g) * groups + g];
  for (int g = 0; g < groups; ++g) chol[static_cast<std::size_t>(g) * groups + g] += 1e-9 * trace / groups + 1e-30;
  if (!Cholesky(chol, groups)) return;
  // Solve L L^T s = b (Cholesky leaves L in the lower triangle).
  std::vector<double> s_new(b);
  for (int i = 0; i < groups; ++i) {
    for (int k = 0; k < i; ++k) s_new[i] -= chol[static_cast<std::size_t>(i) * groups + k] * s_new[k];
    s_new[i] /= chol[static_cast<std::size_t>(i) * groups + i];
  }
  for (int i = groups - 1; i >= 0; --i) {
    for (int k = i + 1; k < groups; ++k) s_new[i] -= chol[static_cast<std::size_t>(k) * groups + i] * s_new[k];
    s_new[i] /= chol[static_cast<std::size_t>(i) * groups + i];
  }
  for (int g = 0; g < groups; ++g) {
    // A group whose codes all sit at its zero has no scale to fit: it keeps its own.
    if (a[static_cast<std::size_t>(g) * groups + g] <= 0) s_new[g] = old_s[g];
    s_new[g] = Fp16ToFloat(FloatToFp16(static_cast<float>(s_new[g])));
    if (!std::isfinite(s_new[g]) || s_new[g] <= 0) return;
  }
  if (error(s_new) >= error(old_s)) return;
  for (int g = 0; g < groups; ++g) SetW2Params(m, r, g, {static_cast<float>(s_new[g]), params[g].zero});
}

}  // namespace

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, std::span<const double> gram,
                                        std::span<const uint8_t> keep, const GptqOptions& options) {
  ASSIGN_OR_RETURN(GptqHessian hessian, PrepareGptqHessian(gram, shape.cols, options));
  return QuantizeW2Gptq(w, shape, hessian, keep, nullptr);
}

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, const GptqHessian& hessian,
                                        std::span<const uint8_t> keep, ThreadPool* pool, std::span<float> positions) {
  if (absl::Status s = ValidateW2Shape(shape); !s.ok()) return s;
  const int rows = shape.rows, n = shape.cols;
  if (w.size() != static_cast<std::size_t>(rows) * n || hessian.n != n) {
    return absl::InvalidArgumentError("GPTQ: weight or Hessian size does not match the shape");
  }
  if (shape.sparse24 != !keep.empty()) return absl::InvalidArgumentError("GPTQ: a 2:4 mask must be given exactly for sparse shapes");
  if (!positions.empty() && positions.size() != w.size()) return absl::InvalidArgumentError("GPTQ: positions must be rows x cols");

  // Rows are independent (each has its own groups' parameters), so they run in parallel; every
  // code byte and parameter belongs to one row.
  W2Matrix m(shape);
  const bool static_groups = !hessian.order.empty();
  const auto column = [&](int i) { return static_groups ? hessian.order[i] : i; };
  const auto quantize_rows = [&](int64_t begin, int64_t end) {
    std::vector<double> work(n);  // in the order columns are quantized
    std::vector<uint8_t> codes(n);
    std::vector<float> row_in(n);
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
        codes[j] = kNoCode;
        float* position = positions.empty() ? nullptr : &positions[static_cast<std::size_t>(r) * n + j];
        if (position != nullptr) *position = 0.0f;
        if (row_keep == nullptr || row_keep[j]) {
          const uint8_t code = QuantizeW2Value(static_cast<float>(work[i]), params[g]);
          if (position != nullptr) *position = static_cast<float>(work[i] / params[g].scale);
          codes[j] = code;
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
      if (!hessian.gram.empty()) {
        for (int j = 0; j < n; ++j) row_in[j] = hessian.dead[j] ? 0.0f : wr[j];
        RefitRowScales(m, r, row_in, codes, params, hessian);
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
  // Rows in blocks, so that each Gram row is read once per block rather than once per row (the
  // Gram matrix of a down projection is 19 MB: per row, this was a pass over memory).
  constexpr int kBlock = 8;
  const int rows = q.shape.rows, n = q.shape.cols;
  std::vector<float> qrow(n);
  std::vector<double> d(static_cast<std::size_t>(kBlock) * n);
  double err = 0, ref = 0;
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int block = std::min(kBlock, rows - r0);
    const float* wb = w.data() + static_cast<std::size_t>(r0) * n;
    for (int k = 0; k < block; ++k) {
      DequantizeW2Row(q, r0 + k, qrow);
      for (int j = 0; j < n; ++j) d[static_cast<std::size_t>(k) * n + j] = wb[static_cast<std::size_t>(k) * n + j] - qrow[j];
    }
    for (int i = 0; i < n; ++i) {
      const double* hrow = gram.data() + static_cast<std::size_t>(i) * n;
      for (int k = 0; k < block; ++k) {
        const double* dk = d.data() + static_cast<std::size_t>(k) * n;
        const float* wk = wb + static_cast<std::size_t>(k) * n;
        double hd = 0, hw = 0;
        for (int j = 0; j < n; ++j) {
          hd += hrow[j] * dk[j];
          hw += hrow[j] * wk[j];
        }
        err += dk[i] * hd;
        ref += wk[i] * hw;
      }
    }
  }
  return ref > 0 ? err / ref : 0.0;
}

}  // namespace accllm
