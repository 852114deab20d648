#include "runtime/quant/w2.h"

#include <algorithm>
#include <cmath>

#include <immintrin.h>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"

namespace accllm {

absl::Status ValidateW2Shape(const W2Shape& s) {
  if (s.rows <= 0 || s.cols <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("W2 shape ", s.rows, "x", s.cols, " must be positive"));
  }
  if (s.group_size < 32 || s.group_size > 1024 || (s.group_size & (s.group_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group size ", s.group_size, " must be a power of two in [32, 1024]"));
  }
  return absl::OkStatus();
}

W2Matrix::W2Matrix(const W2Shape& s)
    : shape(s),
      codes(static_cast<std::size_t>(s.code_bytes()), 0),
      sparse_index(s.sparse24 ? static_cast<std::size_t>(s.code_bytes()) : 0, 0),
      scales(static_cast<std::size_t>(s.group_params()), FloatToFp16(1.0f)),
      zeros(static_cast<std::size_t>(s.group_params()), 0) {}

W2View W2Matrix::view() const {
  return {shape, codes.data(), shape.sparse24 ? sparse_index.data() : nullptr, scales.data(), zeros.data()};
}

namespace {

double GroupError(std::span<const float> values, std::span<const float> weights, const W2GroupParams& p) {
  double error = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double d = DequantizeW2Value(QuantizeW2Value(values[i], p), p) - values[i];
    error += (weights.empty() ? 1.0 : weights[i]) * d * d;
  }
  return error;
}

// errors[c] = GroupError(values, weights, {scales[c], zero}) for kSearchCandidates scales side by
// side: QuantizeW2Value and DequantizeW2Value in float arithmetic (the code and its level are small
// integers, exact in float), each candidate's terms converted to double and summed in the values'
// order, so that every sum is GroupError's to the last bit, whichever vector width runs it.
constexpr int kSearchCandidates = 20;

// One candidate vector's difference between the values' dequantized codes and the values.
#define ACCLLM_W2_SEARCH_DIFF(ps, v, s, z, half, two, bias, lowest, highest)                                        \
  _mm##ps##_sub_ps(                                                                                                   \
      _mm##ps##_mul_ps(s, _mm##ps##_sub_ps(                                                                           \
                              _mm##ps##_mul_ps(two, _mm##ps##_min_ps(                                                \
                                                        _mm##ps##_max_ps(_mm##ps##_sub_ps(                           \
                                                                             _mm##ps##_add_ps(                        \
                                                                                 _mm##ps##_mul_ps(_mm##ps##_add_ps(  \
                                                                                     _mm##ps##_div_ps(v, s), z),     \
                                                                                     half),                          \
                                                                                 bias),                              \
                                                                             bias),                                  \
                                                                         lowest),                                    \
                                                        highest)),                                                   \
                              z)),                                                                                   \
      v)

// SSE2, which every x86-64 has: four candidates at a time.
void SearchErrorsSse2(std::span<const float> values, std::span<const float> weights, const float* scales, int zero,
                      double* errors) {
  static_assert(kSearchCandidates % 4 == 0);
  constexpr int kQuads = kSearchCandidates / 4;
  const __m128 z = _mm_set1_ps(static_cast<float>(zero)), half = _mm_set1_ps(0.5f), two = _mm_set1_ps(2.0f);
  const __m128 bias = _mm_set1_ps(kW2RoundingBias), lowest = _mm_setzero_ps(), highest = _mm_set1_ps(3.0f);
  __m128 s[kQuads];
  __m128d sum[2 * kQuads];
  for (int k = 0; k < kQuads; ++k) {
    s[k] = _mm_loadu_ps(scales + 4 * k);
    sum[2 * k] = sum[2 * k + 1] = _mm_setzero_pd();
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    const __m128 v = _mm_set1_ps(values[i]);
    const __m128d w = _mm_set1_pd(weights.empty() ? 1.0 : weights[i]);
    for (int k = 0; k < kQuads; ++k) {
      const __m128 d = ACCLLM_W2_SEARCH_DIFF(, v, s[k], z, half, two, bias, lowest, highest);
      const __m128d lo = _mm_cvtps_pd(d), hi = _mm_cvtps_pd(_mm_movehl_ps(d, d));
      sum[2 * k] = _mm_add_pd(sum[2 * k], _mm_mul_pd(_mm_mul_pd(w, lo), lo));
      sum[2 * k + 1] = _mm_add_pd(sum[2 * k + 1], _mm_mul_pd(_mm_mul_pd(w, hi), hi));
    }
  }
  for (int k = 0; k < 2 * kQuads; ++k) _mm_storeu_pd(errors + 2 * k, sum[k]);
}

// acc + w d d, four terms in double.
__attribute__((target("avx"))) inline __m256d AddWeightedSquares(__m256d acc, __m256d w, __m128 d) {
  const __m256d wide = _mm256_cvtps_pd(d);
  return _mm256_add_pd(acc, _mm256_mul_pd(_mm256_mul_pd(w, wide), wide));
}

// AVX: eight candidates at a time and the last four in SSE, the same operations in the same order
// (the build keeps multiplies and adds apart: -ffp-contract=off). Most of GPTQ's own time at 7B
// widths is this search: about half of it goes.
__attribute__((target("avx"))) void SearchErrorsAvx(std::span<const float> values, std::span<const float> weights,
                                                    const float* scales, int zero, double* errors) {
  static_assert(kSearchCandidates == 8 + 8 + 4);
  const __m256 z = _mm256_set1_ps(static_cast<float>(zero)), half = _mm256_set1_ps(0.5f), two = _mm256_set1_ps(2.0f);
  const __m256 bias = _mm256_set1_ps(kW2RoundingBias), lowest = _mm256_setzero_ps(), highest = _mm256_set1_ps(3.0f);
  const __m128 z4 = _mm256_castps256_ps128(z), half4 = _mm256_castps256_ps128(half), two4 = _mm256_castps256_ps128(two);
  const __m128 bias4 = _mm256_castps256_ps128(bias), lowest4 = _mm_setzero_ps(), highest4 = _mm256_castps256_ps128(highest);
  const __m256 s0 = _mm256_loadu_ps(scales), s1 = _mm256_loadu_ps(scales + 8);
  const __m128 s2 = _mm_loadu_ps(scales + 16);
  __m256d sum[5];
  for (__m256d& x : sum) x = _mm256_setzero_pd();
  for (std::size_t i = 0; i < values.size(); ++i) {
    const __m256 v = _mm256_set1_ps(values[i]);
    const __m256d w = _mm256_set1_pd(weights.empty() ? 1.0 : weights[i]);
    const __m256 d0 = ACCLLM_W2_SEARCH_DIFF(256, v, s0, z, half, two, bias, lowest, highest);
    const __m256 d1 = ACCLLM_W2_SEARCH_DIFF(256, v, s1, z, half, two, bias, lowest, highest);
    const __m128 d2 = ACCLLM_W2_SEARCH_DIFF(, _mm256_castps256_ps128(v), s2, z4, half4, two4, bias4, lowest4, highest4);
    sum[0] = AddWeightedSquares(sum[0], w, _mm256_castps256_ps128(d0));
    sum[1] = AddWeightedSquares(sum[1], w, _mm256_extractf128_ps(d0, 1));
    sum[2] = AddWeightedSquares(sum[2], w, _mm256_castps256_ps128(d1));
    sum[3] = AddWeightedSquares(sum[3], w, _mm256_extractf128_ps(d1, 1));
    sum[4] = AddWeightedSquares(sum[4], w, d2);
  }
  for (int k = 0; k < 5; ++k) _mm256_storeu_pd(errors + 4 * k, sum[k]);
}
#undef ACCLLM_W2_SEARCH_DIFF

void SearchErrors(std::span<const float> values, std::span<const float> weights, const float* scales, int zero,
                  double* errors) {
  static const bool avx = __builtin_cpu_supports("avx");
  (avx ? SearchErrorsAvx : SearchErrorsSse2)(values, weights, scales, zero, errors);
}

}  // namespace

// The grid is scale * {-zero, 2 - zero, 4 - zero, 6 - zero}. For each zero point the scale
// that makes the grid reach the group's far end is tried, shrunk and stretched (clipping search),
// and the best is refined once by weighted least squares on its codes (as llama.cpp's k-quants do).
W2GroupParams ChooseW2Params(std::span<const float> values, std::span<const float> weights) {
  float lo = 0.0f, hi = 0.0f;
  for (float v : values) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  W2GroupParams best{1.0f, 0};
  if (hi - lo <= 0.0f) return best;
  double best_error = INFINITY;
  const auto consider = [&](float scale, int zero) {
    scale = Fp16ToFloat(FloatToFp16(scale));
    if (!(scale > 0.0f) || !std::isfinite(scale)) return;
    const W2GroupParams p{scale, static_cast<uint8_t>(zero)};
    const double error = GroupError(values, weights, p);
    if (error < best_error) {
      best_error = error;
      best = p;
    }
  };
  // A zero point's candidate scales are scored side by side (SearchErrors).
  constexpr int kShrinks = 16, kStretches = 4, kCandidates = kShrinks + kStretches;
  static_assert(kCandidates == kSearchCandidates);
  for (int zero = 0; zero <= kW2MaxZero; ++zero) {
    // The scale at which the grid's ends reach the group's ends on the side that needs more.
    const int top = W2Level(3, zero), bottom = W2Level(0, zero);
    const float reach = std::max(top > 0 ? hi / static_cast<float>(top) : 0.0f,
                                 bottom < 0 ? lo / static_cast<float>(bottom) : 0.0f);
    if (!(reach > 0.0f)) continue;
    float scales[kCandidates];
    for (int step = 0; step < kShrinks; ++step) scales[step] = reach * (1.0f - 0.04f * step);
    for (int step = 1; step <= kStretches; ++step) scales[kShrinks - 1 + step] = reach * (1.0f + 0.05f * step);
    for (float& scale : scales) scale = Fp16ToFloat(FloatToFp16(scale));
    double errors[kCandidates];
    SearchErrors(values, weights, scales, zero, errors);
    for (int c = 0; c < kCandidates; ++c) {
      if (!(scales[c] > 0.0f) || !std::isfinite(scales[c]) || !(errors[c] < best_error)) continue;
      best_error = errors[c];
      best = {scales[c], static_cast<uint8_t>(zero)};
    }
  }
  // Least-squares scale for the chosen codes, kept if it lowers the error.
  double num = 0, den = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double w = weights.empty() ? 1.0 : weights[i];
    const double q = W2Level(QuantizeW2Value(values[i], best), best.zero);
    num += w * values[i] * q;
    den += w * q * q;
  }
  if (den > 0) consider(static_cast<float>(num / den), best.zero);
  return best;
}

void SetW2Code(W2Matrix& m, int row, int stored_col, uint8_t code, uint8_t position) {
  const CodeSlot slot = W2CodeSlot(m.shape, row, stored_col);
  const uint8_t mask = static_cast<uint8_t>(3u << slot.shift);
  m.codes[slot.byte] = static_cast<uint8_t>((m.codes[slot.byte] & ~mask) | (code << slot.shift));
  if (m.shape.sparse24) {
    m.sparse_index[slot.byte] = static_cast<uint8_t>((m.sparse_index[slot.byte] & ~mask) | (position << slot.shift));
  }
}

void SetW2Params(W2Matrix& m, int row, int group, const W2GroupParams& params) {
  const int64_t i = W2ParamIndex(row, group, m.shape.groups());
  m.scales[i] = FloatToFp16(params.scale);
  m.zeros[i] = params.zero;
}

absl::StatusOr<W2Matrix> QuantizeW2(std::span<const float> w, const W2Shape& shape,
                                    std::span<const uint8_t> keep) {
  if (absl::Status s = ValidateW2Shape(shape); !s.ok()) return s;
  const std::size_t n = static_cast<std::size_t>(shape.rows) * shape.cols;
  if (w.size() != n) return absl::InvalidArgumentError("weight count does not match the shape");
  if (shape.sparse24 != !keep.empty() || (!keep.empty() && keep.size() != n)) {
    return absl::InvalidArgumentError("a 2:4 mask must be given exactly for sparse shapes");
  }
  if (shape.sparse24 && shape.cols % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("2:4 sparsity needs columns divisible by 4, got ", shape.cols));
  }
  W2Matrix m(shape);
  std::vector<float> values;
  std::vector<int> stored_cols;
  std::vector<uint8_t> positions;
  for (int r = 0; r < shape.rows; ++r) {
    const float* row = w.data() + static_cast<std::size_t>(r) * shape.cols;
    for (int g = 0; g < shape.groups(); ++g) {
      values.clear();
      stored_cols.clear();
      positions.clear();
      const int begin = g * shape.group_size;
      const int end = std::min(begin + shape.group_size, shape.cols);
      for (int c = begin; c < end; c += shape.sparse24 ? 4 : 1) {
        if (!shape.sparse24) {
          values.push_back(row[c]);
          stored_cols.push_back(c);
          continue;
        }
        int kept = 0;
        for (int j = 0; j < 4; ++j) {
          if (!keep[static_cast<std::size_t>(r) * shape.cols + c + j]) continue;
          if (kept == 2) return absl::InvalidArgumentError(absl::StrCat("row ", r, " columns ", c, "..", c + 3, " keep more than 2 of 4"));
          values.push_back(row[c + j]);
          stored_cols.push_back(c / 2 + kept);
          positions.push_back(static_cast<uint8_t>(j));
          ++kept;
        }
        if (kept != 2) return absl::InvalidArgumentError(absl::StrCat("row ", r, " columns ", c, "..", c + 3, " keep ", kept, " of 4, not 2"));
      }
      const W2GroupParams p = ChooseW2Params(values);
      SetW2Params(m, r, g, p);
      for (std::size_t i = 0; i < values.size(); ++i) {
        SetW2Code(m, r, stored_cols[i], QuantizeW2Value(values[i], p), positions.empty() ? 0 : positions[i]);
      }
    }
  }
  return m;
}

void DequantizeW2Row(const W2View& w, int row, std::span<float> out) {
  const W2Shape& s = w.shape;
  std::fill(out.begin(), out.end(), 0.0f);
  for (int c = 0; c < s.stored_cols(); ++c) {
    const int original = W2OriginalColumn(w, row, c);
    if (original >= s.cols) continue;
    const int64_t pi = W2ParamIndex(row, original / s.group_size, s.groups());
    out[original] = DequantizeW2Value(W2StoredCode(w, row, c), {Fp16ToFloat(w.scales[pi]), w.zeros[pi]});
  }
}

}  // namespace accllm
