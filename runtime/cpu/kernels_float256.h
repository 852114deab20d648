// The float kernels on 256-bit registers, in the order every path and device adds floats
// (runtime/common/lane_sum.h: eight lanes, a fixed tree, then the tail), for each file that
// compiles them with its own -m flags (kernels_avx2_body.h, kernels_avx512.cc). Internal linkage
// (an anonymous namespace): no instance built for one instruction set is linked into another.
// Needs AVX2, FMA and F16C.
//
// Dot products (the fp16/fp32 matrix products, KV scores) keep one 8-lane register per sum;
// element-wise accumulations (KV values) use fused multiply-adds in key order.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>

#include "runtime/common/a8_code.h"
#include "runtime/common/exp.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/lane_sum.h"
#include "runtime/common/nn_ops.h"
#include "runtime/common/round.h"
#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

inline float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

inline __m256 LoadWeights8(const uint16_t* w) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))); }
inline __m256 LoadWeights8(const float* w) { return _mm256_loadu_ps(w); }
inline float WeightAt(const uint16_t* w) { return _cvtsh_ss(*w); }
inline float WeightAt(const float* w) { return *w; }

// Two rows x four tokens per pass (eight FMA chains); rows in blocks that stay in L2.
template <int NR, int NT, typename W>
void DenseBlock256(const W* w, int cols, const float* x, int t0, int64_t ldx, int r0, float* y, int64_t ldy) {
  const int vec_cols = cols / 8 * 8;
  __m256 acc[NR][NT];
  for (int i = 0; i < NR; ++i) {
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  for (int c = 0; c < vec_cols; c += 8) {
    __m256 wv[NR];
    for (int i = 0; i < NR; ++i) wv[i] = LoadWeights8(w + int64_t{r0 + i} * cols + c);
    for (int j = 0; j < NT; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + (t0 + j) * ldx + c);
      for (int i = 0; i < NR; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < NR; ++i) {
    const W* row = w + int64_t{r0 + i} * cols;
    for (int j = 0; j < NT; ++j) {
      const float* xt = x + (t0 + j) * ldx;
      float sum = HorizontalSum(acc[i][j]);
      for (int c = vec_cols; c < cols; ++c) sum = std::fma(WeightAt(row + c), xt[c], sum);
      y[(t0 + j) * ldy + r0 + i] = sum;
    }
  }
}

template <typename W>
void DenseMatMul256(const W* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                    float* y, int64_t ldy) {
  constexpr int kRowBlock = 64;
  for (int rb = row_begin; rb < row_end; rb += kRowBlock) {
    const int re = rb + kRowBlock < row_end ? rb + kRowBlock : row_end;
    int t = 0;
    for (; t + 4 <= tokens; t += 4) {
      int r = rb;
      for (; r + 2 <= re; r += 2) DenseBlock256<2, 4>(w, cols, x, t, ldx, r, y, ldy);
      for (; r < re; ++r) DenseBlock256<1, 4>(w, cols, x, t, ldx, r, y, ldy);
    }
    for (; t < tokens; ++t) {
      for (int r = rb; r < re; ++r) DenseBlock256<1, 1>(w, cols, x, t, ldx, r, y, ldy);
    }
  }
}

// 16 code bytes (32 nibbles) to 32 bytes in element order: low nibble first.
inline __m256i UnpackNibbles256(const uint8_t* codes) {
  const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi16(0x0f)),
                         _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0xf0)), 4));
}

template <int I>
inline __m256 Lane256(__m256i bytes) {
  const __m128i half = I < 2 ? _mm256_castsi256_si128(bytes) : _mm256_extracti128_si256(bytes, 1);
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(I % 2 == 0 ? half : _mm_srli_si128(half, 8)));
}

// NK keys side by side, each in its own register and in its own order: one key's sum is a chain
// of dependent fused multiply-adds, so one key at a time waits out their latency.
template <int NK>
inline void Kv4ScoreKeys256(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int head_size,
                            float scale, float* scores) {
  __m256 acc[NK];
  for (int k = 0; k < NK; ++k) acc[k] = _mm256_setzero_ps();
  for (int d = 0; d < head_size; d += 32) {
    const __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
    const __m256 q2 = _mm256_loadu_ps(q + d + 16), q3 = _mm256_loadu_ps(q + d + 24);
    for (int k = 0; k < NK; ++k) {
      const __m256i bytes = UnpackNibbles256(codes + int64_t{k} * (head_size / 2) + d / 2);
      acc[k] = _mm256_fmadd_ps(q0, Lane256<0>(bytes), acc[k]);
      acc[k] = _mm256_fmadd_ps(q1, Lane256<1>(bytes), acc[k]);
      acc[k] = _mm256_fmadd_ps(q2, Lane256<2>(bytes), acc[k]);
      acc[k] = _mm256_fmadd_ps(q3, Lane256<3>(bytes), acc[k]);
    }
  }
  for (int k = 0; k < NK; ++k) {
    scores[k] = scale * (_cvtsh_ss(params[k].scale) * HorizontalSum(acc[k]) + _cvtsh_ss(params[k].min) * q_sum);
  }
}

inline void Kv4Score256(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count, int head_size,
                  float scale, float* scores) {
  if (head_size % 32 != 0) return Kv4ScoreScalar(q, q_sum, codes, params, count, head_size, scale, scores);
  constexpr int kKeys = 4;
  int i = 0;
  for (; i + kKeys <= count; i += kKeys) {
    Kv4ScoreKeys256<kKeys>(q, q_sum, codes + int64_t{i} * (head_size / 2), params + i, head_size, scale, scores + i);
  }
  for (; i < count; ++i) {
    Kv4ScoreKeys256<1>(q, q_sum, codes + int64_t{i} * (head_size / 2), params + i, head_size, scale, scores + i);
  }
}

inline float Kv4Accumulate256(float* out, const float* p, const uint8_t* codes, const Kv4Params* params, int count,
                        int head_size) {
  if (head_size % 32 != 0) return Kv4AccumulateScalar(out, p, codes, params, count, head_size);
  float min_sum = 0.0f;
  for (int d = 0; d < head_size; d += 32) {
    __m256 acc[4];
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_loadu_ps(out + d + 8 * j);
    for (int i = 0; i < count; ++i) {
      const __m256i bytes = UnpackNibbles256(codes + int64_t{i} * (head_size / 2) + d / 2);
      const __m256 ps = _mm256_set1_ps(p[i] * _cvtsh_ss(params[i].scale));
      acc[0] = _mm256_fmadd_ps(ps, Lane256<0>(bytes), acc[0]);
      acc[1] = _mm256_fmadd_ps(ps, Lane256<1>(bytes), acc[1]);
      acc[2] = _mm256_fmadd_ps(ps, Lane256<2>(bytes), acc[2]);
      acc[3] = _mm256_fmadd_ps(ps, Lane256<3>(bytes), acc[3]);
    }
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + d + 8 * j, acc[j]);
  }
  for (int i = 0; i < count; ++i) min_sum += p[i] * _cvtsh_ss(params[i].min);
  return min_sum;
}

inline void F32Score256(const float* q, const float* keys, int count, int head_size, float scale, float* scores) {
  if (head_size % 8 != 0) return F32ScoreScalar(q, keys, count, head_size, scale, scores);
  for (int i = 0; i < count; ++i) {
    const float* k = keys + int64_t{i} * head_size;
    __m256 acc = _mm256_setzero_ps();
    for (int d = 0; d < head_size; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), acc);
    scores[i] = HorizontalSum(acc) * scale;
  }
}

// NQ queries x ND registers of dimensions from d: each value vector loaded once for the NQ queries.
template <int NQ, int ND>
inline void F32AccumulateTile256(float* out, int64_t ld_out, const float* p, int64_t ld_p, const float* values,
                                 int count, int head_size, int d) {
  __m256 acc[NQ][ND];
  for (int j = 0; j < NQ; ++j) {
    for (int k = 0; k < ND; ++k) acc[j][k] = _mm256_loadu_ps(out + j * ld_out + d + 8 * k);
  }
  for (int i = 0; i < count; ++i) {
    const float* v = values + int64_t{i} * head_size + d;
    __m256 vv[ND];
    for (int k = 0; k < ND; ++k) vv[k] = _mm256_loadu_ps(v + 8 * k);
    for (int j = 0; j < NQ; ++j) {
      const __m256 pj = _mm256_broadcast_ss(p + j * ld_p + i);
      for (int k = 0; k < ND; ++k) acc[j][k] = _mm256_fmadd_ps(pj, vv[k], acc[j][k]);
    }
  }
  for (int j = 0; j < NQ; ++j) {
    for (int k = 0; k < ND; ++k) _mm256_storeu_ps(out + j * ld_out + d + 8 * k, acc[j][k]);
  }
}

template <int NQ>
inline void F32AccumulateQueries256(float* out, int64_t ld_out, const float* p, int64_t ld_p, const float* values,
                                    int count, int head_size) {
  int d = 0;
  for (; d + 16 <= head_size; d += 16) F32AccumulateTile256<NQ, 2>(out, ld_out, p, ld_p, values, count, head_size, d);
  for (; d < head_size; d += 8) F32AccumulateTile256<NQ, 1>(out, ld_out, p, ld_p, values, count, head_size, d);
}

inline void F32Accumulate256(float* out, int64_t ld_out, const float* p, int64_t ld_p, int queries,
                             const float* values, int count, int head_size) {
  if (head_size % 8 != 0) return F32AccumulateScalar(out, ld_out, p, ld_p, queries, values, count, head_size);
  int j = 0;
  for (; j + 4 <= queries; j += 4) F32AccumulateQueries256<4>(out + j * ld_out, ld_out, p + j * ld_p, ld_p, values, count, head_size);
  for (; j < queries; ++j) F32AccumulateQueries256<1>(out + j * ld_out, ld_out, p + j * ld_p, ld_p, values, count, head_size);
}

// Hadamard butterflies within each 8-lane register: lanes with the `upper` bit set hold x[j + len]
// and become a - b (partner - self); the others hold x[j] and become a + b (self + partner).
template <int kUpperLanes>
inline __m256 InRegisterButterfly(__m256 self, __m256 partner) {
  return _mm256_blend_ps(_mm256_add_ps(self, partner), _mm256_sub_ps(partner, self), kUpperLanes);
}

// Hadamard256 of kN values held in registers from load to store (a head of 64 or 128): the passes
// between registers are the passes of length 8, 16, ... over their lanes.
template <int kN>
inline void HadamardInRegisters256(float* x) {
  constexpr int kRegisters = kN / 8;
  __m256 v[kRegisters];
#pragma GCC unroll 16
  for (int r = 0; r < kRegisters; ++r) {
    v[r] = _mm256_loadu_ps(x + 8 * r);
    v[r] = InRegisterButterfly<0xAA>(v[r], _mm256_permute_ps(v[r], 0xB1));
    v[r] = InRegisterButterfly<0xCC>(v[r], _mm256_permute_ps(v[r], 0x4E));
    v[r] = InRegisterButterfly<0xF0>(v[r], _mm256_permute2f128_ps(v[r], v[r], 0x01));
  }
#pragma GCC unroll 16
  for (int len = 1; len < kRegisters; len <<= 1) {
#pragma GCC unroll 16
    for (int j = 0; j < kRegisters; ++j) {
      if ((j & len) != 0) continue;
      const int partner = (j | len) & (kRegisters - 1);  // j + len, in bounds as the compiler can see
      const __m256 a = v[j], b = v[partner];
      v[j] = _mm256_add_ps(a, b);
      v[partner] = _mm256_sub_ps(a, b);
    }
  }
  const __m256 scale = _mm256_set1_ps(1.0f / std::sqrt(static_cast<float>(kN)));
#pragma GCC unroll 16
  for (int r = 0; r < kRegisters; ++r) _mm256_storeu_ps(x + 8 * r, _mm256_mul_ps(v[r], scale));
}

// Hadamard (runtime/common/hadamard.h) eight lanes at a time: every pass in the same order, every
// element through the same adds (a + b is b + a in IEEE arithmetic), so bit-identical with it.
inline void Hadamard256(float* x, int n) {
  if (n < 8 || !IsPowerOfTwo(n)) return Hadamard(x, n);
  if (n == 64) return HadamardInRegisters256<64>(x);
  if (n == 128) return HadamardInRegisters256<128>(x);
  for (int i = 0; i < n; i += 8) {  // passes of length 1, 2, 4
    __m256 v = _mm256_loadu_ps(x + i);
    v = InRegisterButterfly<0xAA>(v, _mm256_permute_ps(v, 0xB1));
    v = InRegisterButterfly<0xCC>(v, _mm256_permute_ps(v, 0x4E));
    v = InRegisterButterfly<0xF0>(v, _mm256_permute2f128_ps(v, v, 0x01));
    _mm256_storeu_ps(x + i, v);
  }
  for (int len = 8; len < n; len <<= 1) {
    for (int i = 0; i < n; i += 2 * len) {
      for (int j = i; j < i + len; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + len);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + len, _mm256_sub_ps(a, b));
      }
    }
  }
  const __m256 scale = _mm256_set1_ps(1.0f / std::sqrt(static_cast<float>(n)));
  for (int i = 0; i < n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), scale));
}

// QuantizeKv4 (runtime/kv/kv_storage.h) sixteen values at a time: its 16 extreme lanes in two
// registers (vminps(x, lo) is std::min(lo, x) and vmaxps(x, hi) std::max(hi, x), NaN included),
// its reduction, and each code by the same float operations; so the same bits.
inline Kv4Params Kv4Quantize256(std::span<const float> x, uint8_t* codes) {
  static_assert(kKv4ExtremeLanes == 16);
  const std::size_t n = x.size();
  if (n < 16 || n % 16 != 0) return QuantizeKv4(x, codes);
  __m256 lo0 = _mm256_set1_ps(x[0]), lo1 = lo0, hi0 = lo0, hi1 = lo0;
  for (std::size_t i = 0; i < n; i += 16) {
    const __m256 a = _mm256_loadu_ps(&x[i]), b = _mm256_loadu_ps(&x[i + 8]);
    lo0 = _mm256_min_ps(a, lo0);
    lo1 = _mm256_min_ps(b, lo1);
    hi0 = _mm256_max_ps(a, hi0);
    hi1 = _mm256_max_ps(b, hi1);
  }
  alignas(32) float lo[16], hi[16];
  _mm256_store_ps(lo, lo0);
  _mm256_store_ps(lo + 8, lo1);
  _mm256_store_ps(hi, hi0);
  _mm256_store_ps(hi + 8, hi1);
  const auto [x_min, x_max] = ReduceKv4Lanes(lo, hi);
  const Kv4Coding coding = Kv4CodingFor(x_min, x_max);
  const __m256 min = _mm256_set1_ps(coding.lo), inverse = _mm256_set1_ps(coding.inverse);
  const __m256 shifter = _mm256_set1_ps(kRoundHalfEvenShifter), zero = _mm256_setzero_ps(), top = _mm256_set1_ps(15.0f);
  // Odd values' codes shifted to the high nibble, then each pair added (no bits overlap) and its
  // low byte kept: the scalar code's uint8_t(code | code << 4).
  const __m256i odd_shift = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
  const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (std::size_t i = 0; i < n; i += 16) {
    __m256i c[2];
    for (int h = 0; h < 2; ++h) {
      const __m256 scaled = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(&x[i + 8 * h]), min), inverse);
      const __m256 rounded = _mm256_sub_ps(_mm256_add_ps(scaled, shifter), shifter);  // RoundHalfEven
      // RoundHalfEvenWithin's selects: (r < 0 ? 0 : r) is vmaxps(0, r), (m > 15 ? 15 : m) is
      // vminps(15, m). A NaN leaves both as NaN and converts to 0x80000000, whose low byte (the
      // code kept below) is 0, as the scalar code's.
      const __m256 clamped = _mm256_min_ps(top, _mm256_max_ps(zero, rounded));
      c[h] = _mm256_sllv_epi32(_mm256_cvttps_epi32(clamped), odd_shift);
    }
    // hadd gives the pairs as [x0x1, x2x3, x8x9, x10x11, x4x5, x6x7, x12x13, x14x15]: put them in
    // order, then each half's four low bytes into its first four.
    const __m256i pairs = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(c[0], c[1]),
                                                      _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
    const __m256i bytes = _mm256_shuffle_epi8(pairs, low_bytes);
    const uint32_t first = static_cast<uint32_t>(_mm256_extract_epi32(bytes, 0));
    const uint32_t second = static_cast<uint32_t>(_mm256_extract_epi32(bytes, 4));
    std::memcpy(codes + i / 2, &first, 4);
    std::memcpy(codes + i / 2 + 4, &second, 4);
  }
  return coding.params;
}

// exp.h's Exp on eight lanes: the same operations (vfnmadd is fma(-n, c, x): negation is exact;
// vmaxps returns its second operand for a NaN, as fmax does).
inline __m256 Exp256(__m256 x) {
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpMinArgument)), _mm256_set1_ps(kExpMaxArgument));
  const __m256 shifter = _mm256_set1_ps(kExpRoundShifter);
  const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kExpLog2e)), shifter), shifter);
  const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpLn2Hi), xc));
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  const __m256 e_r = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(e_r, _mm256_castsi256_ps(exponent));
  y = _mm256_blendv_ps(y, _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                       _mm256_cmp_ps(x, _mm256_set1_ps(kExpMaxArgument), _CMP_GT_OQ));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(kExpMinArgument), _CMP_LT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// nn_ops.h's Softmax with the exponentials eight at a time; the sum stays in index order.
inline void Softmax256(float* x, int n) {
  __m256 max8 = _mm256_set1_ps(x[0]);
  int i = 0;
  // vmaxps returns its second operand for a NaN: a NaN element is skipped, as std::max skips it.
  for (; i + 8 <= n; i += 8) max8 = _mm256_max_ps(_mm256_loadu_ps(x + i), max8);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, max8);
  float max_val = x[0];
  for (float v : lanes) max_val = std::max(max_val, v);
  for (; i < n; ++i) max_val = std::max(max_val, x[i]);
  const __m256 max_b = _mm256_set1_ps(max_val);
  i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, Exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), max_b)));
  for (; i < n; ++i) x[i] = Exp(x[i] - max_val);
  float sum = 0.0f;
  for (i = 0; i < n; ++i) sum += x[i];
  const __m256 sum_b = _mm256_set1_ps(sum);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), sum_b));
  for (; i < n; ++i) x[i] /= sum;
}

// QuantizeA8 (runtime/quant/a8.h) 32 values at a time: the maximum over the sign-cleared bits
// (an unsigned max, as the scalar code takes it), each code by A8Code's operations, and each
// group's sum from the biased codes (vpsadbw: sums of unsigned bytes).
inline void QuantizeA8256(std::span<const float> x, const A8Row& row) {
  const int n = static_cast<int>(x.size()), cols = row.cols, group_size = row.group_size;
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  __m256i bits = _mm256_setzero_si256();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    bits = _mm256_max_epu32(bits, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x[i])), magnitude));
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), bits);
  uint32_t max_bits = *std::max_element(lanes, lanes + 8);
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], sizeof b);
    max_bits = std::max(max_bits, b & 0x7fffffffu);
  }
  float amax;
  std::memcpy(&amax, &max_bits, sizeof amax);
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  *row.scale = amax / 127.0f;

  const __m256 scale = _mm256_set1_ps(inverse), shifter = _mm256_set1_ps(kRoundHalfEvenShifter);
  const __m256 low = _mm256_set1_ps(-127.0f), high = _mm256_set1_ps(127.0f);
  // A8Code of 8 values: x * inverse rounded half to even, NaN (unordered with itself) cleared to
  // +0, then held to [-127, 127].
  const auto codes8 = [&](int at) {
    const __m256 v = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(&x[at]), scale), shifter), shifter);
    const __m256 ordered = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(ordered, low), high));
  };
  // The packs interleave 128-bit lanes; this puts the 4-byte runs back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int8_t* q = row.codes;
  i = 0;
  for (; i + 32 <= n; i += 32) {
    // The codes are within [-127, 127]: the saturating packs keep them.
    const __m256i words = _mm256_packs_epi32(codes8(i), codes8(i + 8));
    const __m256i words2 = _mm256_packs_epi32(codes8(i + 16), codes8(i + 24));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i),
                        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words2), order));
  }
  for (; i < n; ++i) q[i] = A8Code(x[i], inverse);
  std::fill(q + n, q + cols, int8_t{0});

  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  uint8_t* biased = row.biased_codes;
  i = 0;
  for (; i + 32 <= cols; i += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(biased + i),
                        _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i)), flip));
  }
  for (; i < cols; ++i) biased[i] = static_cast<uint8_t>(q[i] + 128);
  for (int g = 0; g < cols / group_size; ++g) {
    const int first = g * group_size;
    int32_t s = 0;
    if (group_size % 32 == 0) {
      __m256i sums = _mm256_setzero_si256();
      for (int j = first; j < first + group_size; j += 32) {
        sums = _mm256_add_epi64(sums, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(biased + j)),
                                                      _mm256_setzero_si256()));
      }
      alignas(32) int64_t parts[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(parts), sums);
      s = static_cast<int32_t>(parts[0] + parts[1] + parts[2] + parts[3]) - 128 * group_size;
    } else {
      for (int j = first; j < first + group_size; ++j) s += q[j];
    }
    row.group_sums[g] = s;
  }
}

// nn_ops.h's SwiGlu eight at a time.
inline void SwiGlu256(float* h, const float* h2, int n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 val = _mm256_loadu_ps(h + i);
    const __m256 silu = _mm256_mul_ps(val, _mm256_div_ps(one, _mm256_add_ps(one, Exp256(_mm256_xor_ps(val, sign)))));
    _mm256_storeu_ps(h + i, _mm256_mul_ps(silu, _mm256_loadu_ps(h2 + i)));
  }
  SwiGlu(h + i, h2 + i, n - i);
}

// RopeAngles::ApplyRope four pairs at a time: each pair's cosine and sine spread over its two
// lanes, v * (c, c) + swap(v) * (-s, s), which are the scalar code's v0 c - v1 s and v0 s + v1 c
// (a - b is a + -b, and the adds commute); a head's last pairs and a partial head as it does.
inline void Rope256(float* vec, int n, const float* cos, const float* sin, int half) {
  const __m256i spread = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 negate_even = _mm256_setr_ps(-0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f);
  for (int base = 0; base < n; base += 2 * half) {
    int j = 0;
    for (; j + 4 <= half && base + 2 * j + 8 <= n; j += 4) {
      float* v = vec + base + 2 * j;
      const __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos + j)), spread);
      const __m256 s = _mm256_xor_ps(_mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin + j)), spread),
                                     negate_even);
      const __m256 x = _mm256_loadu_ps(v);
      const __m256 swapped = _mm256_permute_ps(x, 0xb1);  // (v1, v0) in each pair
      _mm256_storeu_ps(v, _mm256_add_ps(_mm256_mul_ps(x, c), _mm256_mul_ps(swapped, s)));
    }
    if (j < half && base + 2 * j < n) {
      RopeAngles::ApplyRope(vec + base + 2 * j, std::min(n - base, 2 * half) - 2 * j, cos + j, sin + j, half - j);
    }
  }
}

// nn_ops.h's RmsNorm after the residual add: lane_sum.h's 64 lanes of squares in eight registers
// (a product, then an add), its halvings (+32 and +16 between registers, +8, +4, +2, +1 within
// one), the tail in order, then weight * (1/rms * x).
inline void ResidualRmsNorm256(float* x, const float* residual, float* o, const float* weight, int size, float eps) {
  static_assert(kNormLanes == 64);
  int i = 0;
  if (residual != nullptr) {
    for (; i + 8 <= size; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(residual + i)));
    for (; i < size; ++i) x[i] += residual[i];
  }
  __m256 lane[8];
  for (__m256& l : lane) l = _mm256_setzero_ps();
  const int n64 = size / kNormLanes * kNormLanes;
  for (i = 0; i < n64; i += kNormLanes) {
    for (int k = 0; k < 8; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      lane[k] = _mm256_add_ps(lane[k], _mm256_mul_ps(v, v));
    }
  }
  for (int k = 0; k < 4; ++k) lane[k] = _mm256_add_ps(lane[k], lane[k + 4]);
  for (int k = 0; k < 2; ++k) lane[k] = _mm256_add_ps(lane[k], lane[k + 2]);
  const __m256 eight = _mm256_add_ps(lane[0], lane[1]);
  const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
  const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
  float sum = _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
  for (i = n64; i < size; ++i) sum += x[i] * x[i];
  float ss = sum / static_cast<float>(size);
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  const __m256 ss8 = _mm256_set1_ps(ss);
  for (i = 0; i + 8 <= size; i += 8) {
    _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(ss8, _mm256_loadu_ps(x + i))));
  }
  for (; i < size; ++i) o[i] = weight[i] * (ss * x[i]);
}

}  // namespace
}  // namespace accllm
