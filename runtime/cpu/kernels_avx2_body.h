// The 256-bit kernels, compiled once per flavour by a file that defines ACCLLM_AVX2_TABLE (the
// table's name), ACCLLM_AVX2_PATH and ACCLLM_AVX2_NAME, with that flavour's -m flags:
//   kernels_avx2.cc            AVX2 + FMA + F16C
//   kernels_avx2_vnni.cc       + AVX-VNNI (VEX vpdpbusd: Alder Lake and later, Zen 5)
//   kernels_avx2_vnni_evex.cc  + AVX512-VNNI/VL (EVEX vpdpbusd on ymm: the same instruction on
//                              CPUs with AVX-512, which is how the tests run this path there)
// A 64-byte W2 sub-block is two 32-byte halves of 8 row lanes each.
#include <immintrin.h>

#include <cstring>

#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

inline __m256i BroadcastDword(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i BroadcastQword(const int8_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return _mm256_set1_epi64x(v);
}

// acc += per-lane dot of 4 unsigned bytes (u) with 4 signed bytes (s). Without VNNI:
// vpmaddubsw (pairs to int16, no saturation: |3 * 128 * 2| < 2^15) then vpmaddwd.
inline __m256i DotAdd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  const __m256i pairs = _mm256_maddubs_epi16(u, s);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

inline __m256 GroupEpilogue(const W2View& w, int tile, int half, int g, __m256i dot, __m256i a_sum, __m256 y) {
  const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, w.shape.groups()) + 8 * half;
  int64_t zero_bytes;
  std::memcpy(&zero_bytes, w.zeros + pi, 8);
  const __m256i zeros = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zero_bytes));
  const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + pi)));
  const __m256i integer = _mm256_sub_epi32(dot, _mm256_mullo_epi32(zeros, a_sum));
  return _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(integer), y);
}

inline void StoreRows(const W2View& w, int tile, int half, float* out, __m256 y) {
  const int first = tile * kW2RowTile + 8 * half;
  const int valid = w.shape.rows - first;
  if (valid >= 8) {
    _mm256_storeu_ps(out + first, y);
    return;
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, y);
  for (int i = 0; i < valid; ++i) out[first + i] = lanes[i];
}

template <int NT>
void DenseHalf(const W2View& w, const A8Batch& x, int tile, int half, int t0, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  const int subs_per_group = s.stored_group() / kW2ColTile;
  const int subs_per_tile = s.stored_cols() / kW2ColTile;
  const __m256i three = _mm256_set1_epi8(3);
  __m256 out[NT];
  for (int j = 0; j < NT; ++j) out[j] = _mm256_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m256i dot[NT][2];  // two chains per token
    for (int j = 0; j < NT; ++j) dot[j][0] = dot[j][1] = _mm256_setzero_si256();
    const uint8_t* block = w.codes + (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes + 32 * half;
    for (int sb = 0; sb < subs_per_group; ++sb) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + sb * kW2SubBlockBytes));
      const __m256i q0 = _mm256_and_si256(v, three);
      const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), three);
      const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), three);
      const __m256i q3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), three);
      const int col = g * s.group_size + sb * kW2ColTile;
      for (int j = 0; j < NT; ++j) {
        const int8_t* a = x.codes(t0 + j) + col;
        dot[j][0] = DotAdd(dot[j][0], q0, BroadcastDword(a));
        dot[j][1] = DotAdd(dot[j][1], q1, BroadcastDword(a + 4));
        dot[j][0] = DotAdd(dot[j][0], q2, BroadcastDword(a + 8));
        dot[j][1] = DotAdd(dot[j][1], q3, BroadcastDword(a + 12));
      }
    }
    for (int j = 0; j < NT; ++j) {
      out[j] = GroupEpilogue(w, tile, half, g, _mm256_add_epi32(dot[j][0], dot[j][1]),
                             _mm256_set1_epi32(x.group_sums(t0 + j)[g]), out[j]);
    }
  }
  for (int j = 0; j < NT; ++j) {
    StoreRows(w, tile, half, y + (t0 + j) * ldy, _mm256_mul_ps(out[j], _mm256_set1_ps(x.scale(t0 + j))));
  }
}

// 2:4 sparse, as in kernels_avx512.cc: weights as signed (q - zero), activations biased to
// unsigned (a + 128), and the bias taken off once per group from the weights alone.
template <int NT>
void SparseHalf(const W2View& w, const A8Batch& x, int tile, int half, int t0, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  const int subs_per_group = s.stored_group() / kW2ColTile;
  const int subs_per_tile = s.stored_cols() / kW2ColTile;
  const __m256i three = _mm256_set1_epi8(3);
  const __m256i ones = _mm256_set1_epi8(1);
  const __m256i base = _mm256_set1_epi32(0x04040000);  // see kernels_avx512.cc
  __m256 out[NT];
  for (int j = 0; j < NT; ++j) out[j] = _mm256_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, w.shape.groups()) + 8 * half;
    int64_t zero_bytes_raw;
    std::memcpy(&zero_bytes_raw, w.zeros + pi, 8);
    const __m256i zero_bytes =  // each row lane's zero point in all four of its bytes
        _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zero_bytes_raw)), _mm256_set1_epi32(0x01010101));
    __m256i dot[NT], weight_sum = _mm256_setzero_si256();
    for (int j = 0; j < NT; ++j) dot[j] = _mm256_setzero_si256();
    const int64_t first = (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes + 32 * half;
    for (int sb = 0; sb < subs_per_group; ++sb) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.codes + first + sb * kW2SubBlockBytes));
      const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.sparse_index + first + sb * kW2SubBlockBytes));
      const int col = g * s.group_size + sb * 2 * kW2ColTile;
      for (int k = 0; k < 4; ++k) {
        const __m256i q = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 2 * k), three), zero_bytes);
        const __m256i index = _mm256_add_epi8(base, _mm256_and_si256(_mm256_srli_epi16(u, 2 * k), three));
        weight_sum = DotAdd(weight_sum, ones, q);
        for (int j = 0; j < NT; ++j) {
          const auto* biased = reinterpret_cast<const int8_t*>(x.biased_codes(t0 + j));
          dot[j] = DotAdd(dot[j], _mm256_shuffle_epi8(BroadcastQword(biased + col + 8 * k), index), q);
        }
      }
    }
    const __m256i bias = _mm256_slli_epi32(weight_sum, 7);
    const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + pi)));
    for (int j = 0; j < NT; ++j) {
      out[j] = _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(_mm256_sub_epi32(dot[j], bias)), out[j]);
    }
  }
  for (int j = 0; j < NT; ++j) {
    StoreRows(w, tile, half, y + (t0 + j) * ldy, _mm256_mul_ps(out[j], _mm256_set1_ps(x.scale(t0 + j))));
  }
}

template <bool kSparse, int NT>
void Half(const W2View& w, const A8Batch& x, int tile, int half, int t0, float* y, int64_t ldy) {
  if constexpr (kSparse) {
    SparseHalf<NT>(w, x, tile, half, t0, y, ldy);
  } else {
    DenseHalf<NT>(w, x, tile, half, t0, y, ldy);
  }
}

template <bool kSparse>
void MatMul(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  constexpr int kTokenBlock = 4;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    for (int half = 0; half < 2; ++half) {
      if (tile * kW2RowTile + 8 * half >= w.shape.rows) break;
      int t = 0;
      for (; t + kTokenBlock <= x.tokens(); t += kTokenBlock) Half<kSparse, kTokenBlock>(w, x, tile, half, t, y, ldy);
      for (; t < x.tokens(); ++t) Half<kSparse, 1>(w, x, tile, half, t, y, ldy);
    }
  }
}

void MatMulW2A8Avx2(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  if (w.shape.sparse24) {
    MatMul<true>(w, x, tile_begin, tile_end, y, ldy);
  } else {
    MatMul<false>(w, x, tile_begin, tile_end, y, ldy);
  }
}

float HorizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

inline __m256 LoadWeights(const uint16_t* w) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))); }
inline __m256 LoadWeights(const float* w) { return _mm256_loadu_ps(w); }
inline float WeightAt(const uint16_t* w) { return _cvtsh_ss(*w); }
inline float WeightAt(const float* w) { return *w; }

// Two rows x four tokens per pass (eight FMA chains); rows in blocks that stay in L2.
template <int NR, int NT, typename W>
void DenseBlock(const W* w, int cols, const float* x, int t0, int64_t ldx, int r0, float* y, int64_t ldy) {
  const int vec_cols = cols / 8 * 8;
  __m256 acc[NR][NT];
  for (int i = 0; i < NR; ++i) {
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  for (int c = 0; c < vec_cols; c += 8) {
    __m256 wv[NR];
    for (int i = 0; i < NR; ++i) wv[i] = LoadWeights(w + int64_t{r0 + i} * cols + c);
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
      for (int c = vec_cols; c < cols; ++c) sum += WeightAt(row + c) * xt[c];
      y[(t0 + j) * ldy + r0 + i] = sum;
    }
  }
}

template <typename W>
void DenseMatMul(const W* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end, float* y,
                 int64_t ldy) {
  constexpr int kRowBlock = 64;
  for (int rb = row_begin; rb < row_end; rb += kRowBlock) {
    const int re = rb + kRowBlock < row_end ? rb + kRowBlock : row_end;
    int t = 0;
    for (; t + 4 <= tokens; t += 4) {
      int r = rb;
      for (; r + 2 <= re; r += 2) DenseBlock<2, 4>(w, cols, x, t, ldx, r, y, ldy);
      for (; r < re; ++r) DenseBlock<1, 4>(w, cols, x, t, ldx, r, y, ldy);
    }
    for (; t < tokens; ++t) {
      for (int r = rb; r < re; ++r) DenseBlock<1, 1>(w, cols, x, t, ldx, r, y, ldy);
    }
  }
}

void MatMulF16Avx2(const uint16_t* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                   float* y, int64_t ldy) {
  DenseMatMul(w, cols, x, tokens, ldx, row_begin, row_end, y, ldy);
}

void MatMulF32Avx2(const float* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                   float* y, int64_t ldy) {
  DenseMatMul(w, cols, x, tokens, ldx, row_begin, row_end, y, ldy);
}

// 16 code bytes (32 nibbles) to 32 bytes in element order: low nibble first.
inline __m256i UnpackNibbles(const uint8_t* codes) {
  const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi16(0x0f)),
                         _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0xf0)), 4));
}

template <int I>
inline __m256 Lane(__m256i bytes) {
  const __m128i half = I < 2 ? _mm256_castsi256_si128(bytes) : _mm256_extracti128_si256(bytes, 1);
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(I % 2 == 0 ? half : _mm_srli_si128(half, 8)));
}

void Kv4ScoreAvx2(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count, int head_size,
                  float scale, float* scores) {
  if (head_size % 32 != 0) return Kv4ScoreScalar(q, q_sum, codes, params, count, head_size, scale, scores);
  for (int i = 0; i < count; ++i) {
    const uint8_t* c = codes + int64_t{i} * (head_size / 2);
    __m256 acc = _mm256_setzero_ps();
    for (int d = 0; d < head_size; d += 32) {
      const __m256i bytes = UnpackNibbles(c + d / 2);
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), Lane<0>(bytes), acc);
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), Lane<1>(bytes), acc);
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 16), Lane<2>(bytes), acc);
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 24), Lane<3>(bytes), acc);
    }
    scores[i] = scale * (_cvtsh_ss(params[i].scale) * HorizontalSum(acc) + _cvtsh_ss(params[i].min) * q_sum);
  }
}

float Kv4AccumulateAvx2(float* out, const float* p, const uint8_t* codes, const Kv4Params* params, int count,
                        int head_size) {
  if (head_size % 32 != 0) return Kv4AccumulateScalar(out, p, codes, params, count, head_size);
  float min_sum = 0.0f;
  for (int d = 0; d < head_size; d += 32) {
    __m256 acc[4];
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_loadu_ps(out + d + 8 * j);
    for (int i = 0; i < count; ++i) {
      const __m256i bytes = UnpackNibbles(codes + int64_t{i} * (head_size / 2) + d / 2);
      const __m256 ps = _mm256_set1_ps(p[i] * _cvtsh_ss(params[i].scale));
      acc[0] = _mm256_fmadd_ps(ps, Lane<0>(bytes), acc[0]);
      acc[1] = _mm256_fmadd_ps(ps, Lane<1>(bytes), acc[1]);
      acc[2] = _mm256_fmadd_ps(ps, Lane<2>(bytes), acc[2]);
      acc[3] = _mm256_fmadd_ps(ps, Lane<3>(bytes), acc[3]);
    }
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + d + 8 * j, acc[j]);
  }
  for (int i = 0; i < count; ++i) min_sum += p[i] * _cvtsh_ss(params[i].min);
  return min_sum;
}

uint64_t ReadSumAvx2(const uint8_t* data, int64_t bytes) {
  __m256i sum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int64_t i = 0; i < bytes; i += 128) {
    for (int j = 0; j < 4; ++j) {
      sum[j] = _mm256_add_epi64(sum[j], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 32 * j)));
    }
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(sum[0], sum[1]), _mm256_add_epi64(sum[2], sum[3])));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

}  // namespace

namespace {

void F32ScoreAvx2(const float* q, const float* keys, int count, int head_size, float scale, float* scores) {
  if (head_size % 8 != 0) return F32ScoreScalar(q, keys, count, head_size, scale, scores);
  for (int i = 0; i < count; ++i) {
    const float* k = keys + int64_t{i} * head_size;
    __m256 acc = _mm256_setzero_ps();
    for (int d = 0; d < head_size; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), acc);
    scores[i] = HorizontalSum(acc) * scale;
  }
}

void F32AccumulateAvx2(float* out, const float* p, const float* values, int count, int head_size) {
  if (head_size % 8 != 0) return F32AccumulateScalar(out, p, values, count, head_size);
  for (int d = 0; d < head_size; d += 8) {
    __m256 acc = _mm256_loadu_ps(out + d);
    for (int i = 0; i < count; ++i) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(p[i]), _mm256_loadu_ps(values + int64_t{i} * head_size + d), acc);
    }
    _mm256_storeu_ps(out + d, acc);
  }
}

}  // namespace

const CpuKernels ACCLLM_AVX2_TABLE = {ACCLLM_AVX2_PATH, ACCLLM_AVX2_NAME, MatMulW2A8Avx2, MatMulF16Avx2, MatMulF32Avx2,
                                      Kv4ScoreAvx2, Kv4AccumulateAvx2, F32ScoreAvx2, F32AccumulateAvx2, ReadSumAvx2};

}  // namespace accllm
