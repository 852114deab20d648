#include "runtime/quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
#include "runtime/common/status_macros.h"
#include "runtime/quant/linalg.h"

namespace accllm {
namespace {

// Rows are quantized in tiles of at most this many, each tile by one thread: a tile's work
// matrices stay a few MB at 7B widths, and its products are large enough for BLAS.
constexpr int kRowTile = 256;

// GPTQ's lazy batch (Frantar et al., section 3, step 2): columns are quantized in blocks, each
// column's error pushed at once only onto the rest of its block; the block's errors then update
// all later columns in one product. Blocks hold whole groups, so a group's parameters are chosen
// from weights that every earlier column has already updated.
int GptqBlock(int group_size) { return group_size >= 128 ? group_size : 128 / group_size * group_size; }

}  // namespace

absl::StatusOr<GptqHessian> PrepareGptqHessian(std::span<const double> gram, int n, const GptqOptions& options) {
  if (gram.size() != static_cast<std::size_t>(n) * n) return absl::InvalidArgumentError("GPTQ: the Gram matrix is not n x n");
  // Damped Hessian; inputs that never fire ("dead" columns) get a unit diagonal and zero weight.
  GptqHessian hessian;
  hessian.n = n;
  hessian.dead.assign(n, 0);
  hessian.importance.resize(n);
  for (int j = 0; j < n; ++j) hessian.importance[j] = static_cast<float>(gram[static_cast<std::size_t>(j) * n + j]);
  if (options.refit_scales) hessian.gram.assign(gram.begin(), gram.end());  // to float
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
  hessian.damping.resize(n);
  for (int i = 0; i < n; ++i) {
    const int j = hessian.order.empty() ? i : hessian.order[i];
    hessian.damping[i] = static_cast<float>(h[static_cast<std::size_t>(i) * n + i] - gram[static_cast<std::size_t>(j) * n + j]);
  }
  // With J the order reversal, chol(J H J) = L gives H = V V^T with V = J L J upper.
  std::vector<float> reversed(h.size()), factor(h.size());
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      reversed[static_cast<std::size_t>(i) * n + j] = static_cast<float>(h[static_cast<std::size_t>(n - 1 - i) * n + (n - 1 - j)]);
    }
  }
  if (!CholeskyLower(reversed.data(), n)) return absl::FailedPreconditionError("GPTQ: the Hessian is not positive definite");
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) factor[static_cast<std::size_t>(i) * n + j] = reversed[static_cast<std::size_t>(n - 1 - i) * n + (n - 1 - j)];
  }
  hessian.factor = std::move(factor);
  return hessian;
}

namespace {

constexpr uint8_t kNoCode = 255;

// Refits the group scales s of rows [r0, r0 + count) (zeros and codes fixed) to the least
// (w - C s)^T H (w - C s) per row, where column g of C holds each code's level (W2Level) on group
// g's kept columns: a G x G least-squares problem per row, A s = b with A = C^T H C and
// b = C^T H w = A s0 + C^T H d (s0 the scales GPTQ chose, d = w - C s0 its rounding errors).
// A comes from products over the whole tile: per group g, P_g = C_g H_g (the group's columns of C
// times its rows of H), A[k][g] = sum over k's columns of C P_g. `h_delta` holds H d per row
// (count x n, column order) and `delta_error` d^T H d, GPTQ's own output error per row; `codes`
// holds each weight's code (kNoCode for pruned ones). Each row's output error with the scales it
// keeps goes into error[r] and its reference w^T H w into energy[r] (rows r0...).
void RefitScales(W2Matrix& m, int r0, int count, std::span<const uint8_t> codes, std::span<const W2GroupParams> params,
                 const GptqHessian& hessian, std::span<const float> h_delta, std::span<const double> delta_error,
                 std::span<double> error_out, std::span<double> energy_out) {
  const int n = hessian.n, group = m.shape.group_size, groups = m.shape.groups();
  const auto at = [n](int r, int j) { return static_cast<std::size_t>(r) * n + j; };
  std::vector<float> c(static_cast<std::size_t>(count) * n, 0.0f), p(c.size());
  for (int r = 0; r < count; ++r) {
    for (int j = 0; j < n; ++j) {
      const uint8_t code = codes[at(r0 + r, j)];
      if (code != kNoCode) c[at(r, j)] = W2Level(code, params[static_cast<std::size_t>(r0 + r) * groups + j / group].zero);
    }
  }
  const float* h = hessian.gram.data();
  const std::size_t gg = static_cast<std::size_t>(groups) * groups;
  std::vector<double> a(count * gg), u(static_cast<std::size_t>(count) * groups, 0.0);
  // A is symmetric (so is H): for group g only the blocks k >= g, from P_g's columns from g's
  // first one on, each mirrored. Half of the P products' work.
  for (int g = 0; g < groups; ++g) {
    const int begin = g * group, width = std::min(n, begin + group) - begin;
    Gemm(Trans::kNo, Trans::kNo, count, n - begin, width, 1.0f, c.data() + begin, n,
         h + static_cast<std::size_t>(begin) * n + begin, n, 0.0f, p.data() + begin, n);
    for (int r = 0; r < count; ++r) {
      for (int k = g; k < groups; ++k) {
        double sum = 0;
        for (int i = k * group; i < std::min(n, (k + 1) * group); ++i) sum += double{c[at(r, i)]} * p[at(r, i)];
        a[r * gg + static_cast<std::size_t>(k) * groups + g] = sum;
        a[r * gg + static_cast<std::size_t>(g) * groups + k] = sum;
      }
      for (int i = begin; i < begin + width; ++i) u[static_cast<std::size_t>(r) * groups + g] += double{c[at(r, i)]} * h_delta[at(r, i)];
    }
  }
  std::vector<double> chol(gg), b(groups), s_new(groups), old_s(groups);
  for (int r = 0; r < count; ++r) {
    const double* ar = a.data() + r * gg;
    const double* ur = u.data() + static_cast<std::size_t>(r) * groups;
    const W2GroupParams* pr = params.data() + static_cast<std::size_t>(r0 + r) * groups;
    const auto quadratic = [&](std::span<const double> s) {  // s^T A s
      double e = 0;
      for (int g = 0; g < groups; ++g) {
        double as = 0;
        for (int k = 0; k < groups; ++k) as += ar[static_cast<std::size_t>(g) * groups + k] * s[k];
        e += s[g] * as;
      }
      return e;
    };
    for (int g = 0; g < groups; ++g) old_s[g] = pr[g].scale;
    // w^T H w = s0^T A s0 + 2 s0^T C^T H d + d^T H d, and b = A s0 + C^T H d.
    double s_u = 0;
    for (int g = 0; g < groups; ++g) s_u += old_s[g] * ur[g];
    const double energy = quadratic(old_s) + 2 * s_u + delta_error[r];
    for (int g = 0; g < groups; ++g) {
      double as = 0;
      for (int k = 0; k < groups; ++k) as += ar[static_cast<std::size_t>(g) * groups + k] * old_s[k];
      b[g] = as + ur[g];
    }
    // The output error for scales s: w^T H w + s^T A s - 2 s^T b.
    const auto error = [&](std::span<const double> s) {
      double sb = 0;
      for (int g = 0; g < groups; ++g) sb += s[g] * b[g];
      return energy + quadratic(s) - 2 * sb;
    };
    energy_out[r0 + r] = energy;
    error_out[r0 + r] = delta_error[r];
    double trace = 0;
    for (int g = 0; g < groups; ++g) trace += ar[static_cast<std::size_t>(g) * groups + g];
    chol.assign(ar, ar + gg);
    for (int g = 0; g < groups; ++g) chol[static_cast<std::size_t>(g) * groups + g] += 1e-9 * trace / groups + 1e-30;
    if (!CholeskyLower(chol.data(), groups)) continue;
    // Solve L L^T s = b.
    s_new = b;
    for (int i = 0; i < groups; ++i) {
      for (int k = 0; k < i; ++k) s_new[i] -= chol[static_cast<std::size_t>(i) * groups + k] * s_new[k];
      s_new[i] /= chol[static_cast<std::size_t>(i) * groups + i];
    }
    for (int i = groups - 1; i >= 0; --i) {
      for (int k = i + 1; k < groups; ++k) s_new[i] -= chol[static_cast<std::size_t>(k) * groups + i] * s_new[k];
      s_new[i] /= chol[static_cast<std::size_t>(i) * groups + i];
    }
    bool usable = true;
    for (int g = 0; g < groups; ++g) {
      // A group whose codes all sit at its zero has no scale to fit: it keeps its own.
      if (ar[static_cast<std::size_t>(g) * groups + g] <= 0) s_new[g] = old_s[g];
      s_new[g] = Fp16ToFloat(FloatToFp16(static_cast<float>(s_new[g])));
      if (!std::isfinite(s_new[g]) || s_new[g] <= 0) usable = false;
    }
    if (!usable) continue;
    const double new_error = error(s_new);
    if (new_error >= error(old_s)) continue;
    error_out[r0 + r] = new_error;
    for (int g = 0; g < groups; ++g) SetW2Params(m, r0 + r, g, {static_cast<float>(s_new[g]), pr[g].zero});
  }
}

// Runs tile(first_row, count) over rows in tiles of at most kRowTile, spread over `pool`.
void ForEachRowTile(int rows, ThreadPool* pool, const std::function<void(int, int)>& tile) {
  const int tiles = (rows + kRowTile - 1) / kRowTile;
  const auto run = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int r0 = static_cast<int>(t) * kRowTile;
      tile(r0, std::min(kRowTile, rows - r0));
    }
  };
  if (pool == nullptr) return run(0, tiles);
  // Small matrices: more tiles than rows/kRowTile, so that every thread has rows.
  if (tiles < pool->threads()) {
    const int per = (rows + pool->threads() - 1) / pool->threads();
    pool->ParallelFor((rows + per - 1) / per, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int r0 = static_cast<int>(t) * per;
        tile(r0, std::min(per, rows - r0));
      }
    });
    return;
  }
  pool->ParallelFor(tiles, run);
}

}  // namespace

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, std::span<const double> gram,
                                        std::span<const uint8_t> keep, const GptqOptions& options) {
  ASSIGN_OR_RETURN(GptqHessian hessian, PrepareGptqHessian(gram, shape.cols, options));
  return QuantizeW2Gptq(w, shape, hessian, keep, nullptr);
}

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, const GptqHessian& hessian,
                                        std::span<const uint8_t> keep, ThreadPool* pool, std::span<float> positions,
                                        double* output_error) {
  if (absl::Status s = ValidateW2Shape(shape); !s.ok()) return s;
  const int rows = shape.rows, n = shape.cols, groups = shape.groups();
  if (w.size() != static_cast<std::size_t>(rows) * n || hessian.n != n) {
    return absl::InvalidArgumentError("GPTQ: weight or Hessian size does not match the shape");
  }
  if (shape.sparse24 != !keep.empty()) return absl::InvalidArgumentError("GPTQ: a 2:4 mask must be given exactly for sparse shapes");
  if (!positions.empty() && positions.size() != w.size()) return absl::InvalidArgumentError("GPTQ: positions must be rows x cols");

  // Rows are independent (each has its own groups' parameters), so tiles of rows run in
  // parallel; every code byte and parameter belongs to one row.
  W2Matrix m(shape);
  const bool static_groups = !hessian.order.empty();
  const auto column = [&](int i) { return static_groups ? hessian.order[i] : i; };
  const int block = GptqBlock(shape.group_size), group_size = shape.group_size;
  const bool refit = !hessian.gram.empty();
  const float* v = hessian.factor.data();
  const auto v_at = [&](int k, int i) { return v[static_cast<std::size_t>(k) * n + i]; };
  std::vector<uint8_t> codes(refit ? w.size() : 0, kNoCode);  // by column
  std::vector<W2GroupParams> params(static_cast<std::size_t>(rows) * groups);
  std::vector<double> row_error(refit ? rows : 0), row_energy(refit ? rows : 0);
  const ScopedGemmThreads single_threaded_products(1);
  ForEachRowTile(rows, pool, [&](int r0, int count) {
    // In the order columns are quantized: the weights GPTQ starts from (dead inputs zeroed) and
    // each one's rounding error d = w - q.
    std::vector<float> start(static_cast<std::size_t>(count) * n), delta(start.size());
    // Per row and column i of the block: the sum over the columns k rounded so far of V[k][i] d_k.
    std::vector<float> sums(static_cast<std::size_t>(count) * block);
    std::vector<float> v_delta(refit ? start.size() : 0);  // V^T d, each entry once its column is rounded
    std::vector<float> values, importance, updated(group_size);
    const auto choose = [&](int r, int g, const auto& value_of) {
      values.clear();
      importance.clear();
      for (int c = g * group_size; c < std::min(n, (g + 1) * group_size); ++c) {
        if (keep.empty() || keep[static_cast<std::size_t>(r) * n + c]) {
          values.push_back(static_cast<float>(value_of(c)));
          importance.push_back(hessian.importance[c]);
        }
      }
      params[static_cast<std::size_t>(r) * groups + g] = ChooseW2Params(values, importance);
      SetW2Params(m, r, g, params[static_cast<std::size_t>(r) * groups + g]);
    };
    for (int t = 0; t < count; ++t) {
      const int r = r0 + t;
      const float* wr = w.data() + static_cast<std::size_t>(r) * n;
      float* row = start.data() + static_cast<std::size_t>(t) * n;
      for (int i = 0; i < n; ++i) row[i] = hessian.dead[column(i)] ? 0.0f : wr[column(i)];
      if (static_groups) {
        for (int g = 0; g < groups; ++g) choose(r, g, [&](int c) { return hessian.dead[c] ? 0.0f : wr[c]; });
      }
    }
    for (int b0 = 0; b0 < n; b0 += block) {
      const int b1 = std::min(n, b0 + block);
      // The earlier blocks' share of the sums, in one product.
      if (b0 == 0) {
        std::fill(sums.begin(), sums.end(), 0.0f);
      } else {
        Gemm(Trans::kNo, Trans::kNo, count, b1 - b0, b0, 1.0f, delta.data(), n, v + b0, n, 0.0f, sums.data(), block);
      }
      for (int t = 0; t < count; ++t) {
        const int r = r0 + t;
        const float* w0 = start.data() + static_cast<std::size_t>(t) * n;
        float* d = delta.data() + static_cast<std::size_t>(t) * n;
        float* sum = sums.data() + static_cast<std::size_t>(t) * block;  // column i's at sum[i - b0]
        const uint8_t* row_keep = keep.empty() ? nullptr : keep.data() + static_cast<std::size_t>(r) * n;
        for (int i = b0; i < b1; ++i) {
          const int j = column(i), g = j / group_size;
          if (!static_groups && j % group_size == 0) {
            // Column order (i == j; blocks hold whole groups): the group's parameters come from its
            // weights as the earlier columns' errors left them, w + V_gg^-T sum (forward
            // substitution with the group's diagonal block of V, transposed).
            const int width = std::min(n, i + group_size) - i;
            for (int c = 0; c < width; ++c) updated[c] = sum[i - b0 + c];
            for (int k = 0; k < width; ++k) {
              updated[k] /= v_at(i + k, i + k);
              for (int c = k + 1; c < width; ++c) updated[c] -= v_at(i + k, i + c) * updated[k];
            }
            for (int c = 0; c < width; ++c) updated[c] += w0[i + c];
            choose(r, g, [&](int c) { return updated[c - i]; });
          }
          const W2GroupParams& p = params[static_cast<std::size_t>(r) * groups + g];
          const float value = w0[i] + sum[i - b0] / v_at(i, i);
          float quantized = 0.0f;
          float* position = positions.empty() ? nullptr : &positions[static_cast<std::size_t>(r) * n + j];
          if (position != nullptr) *position = 0.0f;
          if (row_keep == nullptr || row_keep[j]) {
            const uint8_t code = QuantizeW2Value(value, p);
            if (position != nullptr) *position = value / p.scale;
            if (refit) codes[static_cast<std::size_t>(r) * n + j] = code;
            quantized = DequantizeW2Value(code, p);
            if (shape.sparse24) {
              int slot = 0;  // kept weights before j in its group of 4
              for (int c = j / 4 * 4; c < j; ++c) slot += row_keep[c];
              SetW2Code(m, r, 2 * (j / 4) + slot, code, static_cast<uint8_t>(j % 4));
            } else {
              SetW2Code(m, r, j, code);
            }
          }
          d[i] = w0[i] - quantized;
          if (refit) v_delta[static_cast<std::size_t>(t) * n + i] = sum[i - b0] + v_at(i, i) * d[i];
          const float* v_row = v + static_cast<std::size_t>(i) * n;
          for (int k = i + 1; k < b1; ++k) sum[k - b0] += v_row[k] * d[i];
        }
      }
    }
    if (!refit) return;
    // H d = V (V^T d) minus the damping's share, and d^T H d = |V^T d|^2 minus the same: GPTQ's own
    // output error per row, in column order for the refit.
    std::vector<float> h_delta(v_delta);
    TimesUpperTransposed(count, n, v, h_delta.data());
    std::vector<float> h_delta_by_column(h_delta.size());
    std::vector<double> delta_error(count);
    for (int t = 0; t < count; ++t) {
      double e = 0;
      for (int i = 0; i < n; ++i) {
        const std::size_t ti = static_cast<std::size_t>(t) * n + i;
        const double vd = v_delta[ti], dd = delta[ti];
        e += vd * vd - double{hessian.damping[i]} * dd * dd;
        h_delta_by_column[static_cast<std::size_t>(t) * n + column(i)] = h_delta[ti] - hessian.damping[i] * delta[ti];
      }
      delta_error[t] = e;
    }
    RefitScales(m, r0, count, codes, params, hessian, h_delta_by_column, delta_error, row_error, row_energy);
  });
  if (output_error != nullptr && refit) {
    double error = 0, energy = 0;
    for (int r = 0; r < rows; ++r) {
      error += row_error[r];
      energy += row_energy[r];
    }
    *output_error = energy > 0 ? error / energy : 0.0;
  }
  return m;
}

double RelativeOutputError(std::span<const float> w, const W2View& q, std::span<const double> gram, ThreadPool* pool) {
  // err = sum over rows of d^T H d with d = w - q, ref = the same of w: per tile of rows, the
  // products D H and W H in float (sgemm, as GPTQ's own), then their row-wise dot products with
  // D and W summed in double.
  const int rows = q.shape.rows, n = q.shape.cols;
  const std::vector<float> h(gram.begin(), gram.end());
  std::vector<double> err(rows), ref(rows);
  const ScopedGemmThreads single_threaded_products(1);
  ForEachRowTile(rows, pool, [&](int r0, int count) {
    std::vector<float> d(static_cast<std::size_t>(count) * n), product(d.size());
    const float* wd = w.data() + static_cast<std::size_t>(r0) * n;
    std::vector<float> qrow(n);
    for (int t = 0; t < count; ++t) {
      DequantizeW2Row(q, r0 + t, qrow);
      for (int j = 0; j < n; ++j) d[static_cast<std::size_t>(t) * n + j] = wd[static_cast<std::size_t>(t) * n + j] - qrow[j];
    }
    const auto quadratic = [&](const float* x, std::vector<double>& out) {
      Gemm(Trans::kNo, Trans::kNo, count, n, n, 1.0f, x, n, h.data(), n, 0.0f, product.data(), n);
      for (int t = 0; t < count; ++t) {
        double sum = 0;
        for (int j = 0; j < n; ++j) sum += double{x[static_cast<std::size_t>(t) * n + j]} * product[static_cast<std::size_t>(t) * n + j];
        out[r0 + t] = sum;
      }
    };
    quadratic(d.data(), err);
    quadratic(wd, ref);
  });
  double e = 0, r = 0;
  for (int i = 0; i < rows; ++i) {
    e += err[i];
    r += ref[i];
  }
  return r > 0 ? e / r : 0.0;
}

}  // namespace accllm
