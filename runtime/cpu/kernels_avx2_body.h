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
#include "runtime/cpu/kernels_float256.h"

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
// vpmaddubsw (pairs to int16, no saturation: |6 * 255 * 2| < 2^15) then vpmaddwd.
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

#if (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)
constexpr bool kVnni = true;
#else
constexpr bool kVnni = false;
#endif

// Without VNNI, the dense kernel adds vpmaddubsw's int16 pair sums of codes (0..3) and A8 bytes
// (at most 2 * 3 * 127 = 762 each) in int16 and widens them with one vpmaddwd every 16 sub-blocks
// (32 pair sums a chain: at most 24384 < 2^15): exact, so the int32 dot is the same, for one
// instruction in three fewer per 4 bytes.
constexpr int kWidenEverySubBlocks = 16;

inline __m256 GroupEpilogue(const W2View& w, int tile, int half, int g, __m256i dot, __m256i a_sum, __m256 y) {
  const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, w.shape.groups()) + 8 * half;
  int64_t zero_bytes;
  std::memcpy(&zero_bytes, w.zeros + pi, 8);
  const __m256i zeros = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(zero_bytes));
  const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + pi)));
  const __m256i integer = _mm256_sub_epi32(_mm256_add_epi32(dot, dot), _mm256_mullo_epi32(zeros, a_sum));  // see W2Level
  return _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(integer), y);
}

template <class View>  // W2View or W8View
inline void StoreRows(const View& w, int tile, int half, float* out, __m256 y) {
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
    __m256i dot[NT][2];    // two chains per token
    __m256i pairs[NT][2];  // without VNNI: int16 pair sums not yet widened into dot
    for (int j = 0; j < NT; ++j) dot[j][0] = dot[j][1] = pairs[j][0] = pairs[j][1] = _mm256_setzero_si256();
    const uint8_t* block = w.codes + (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes + 32 * half;
    for (int sb = 0; sb < subs_per_group; ++sb) {
      // The next row tile, as kernels_avx512.cc's DenseTile does (the second half finds it cached).
      if (half == 0) _mm_prefetch(reinterpret_cast<const char*>(block + (sb + subs_per_tile) * kW2SubBlockBytes), _MM_HINT_T1);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + sb * kW2SubBlockBytes));
      const __m256i q0 = _mm256_and_si256(v, three);
      const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), three);
      const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), three);
      const __m256i q3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), three);
      const int col = g * s.group_size + sb * kW2ColTile;
      for (int j = 0; j < NT; ++j) {
        const int8_t* a = x.codes(t0 + j) + col;
        if constexpr (kVnni) {
          dot[j][0] = DotAdd(dot[j][0], q0, BroadcastDword(a));
          dot[j][1] = DotAdd(dot[j][1], q1, BroadcastDword(a + 4));
          dot[j][0] = DotAdd(dot[j][0], q2, BroadcastDword(a + 8));
          dot[j][1] = DotAdd(dot[j][1], q3, BroadcastDword(a + 12));
        } else {
          pairs[j][0] = _mm256_add_epi16(pairs[j][0], _mm256_maddubs_epi16(q0, BroadcastDword(a)));
          pairs[j][1] = _mm256_add_epi16(pairs[j][1], _mm256_maddubs_epi16(q1, BroadcastDword(a + 4)));
          pairs[j][0] = _mm256_add_epi16(pairs[j][0], _mm256_maddubs_epi16(q2, BroadcastDword(a + 8)));
          pairs[j][1] = _mm256_add_epi16(pairs[j][1], _mm256_maddubs_epi16(q3, BroadcastDword(a + 12)));
        }
      }
      if (!kVnni && ((sb + 1) % kWidenEverySubBlocks == 0 || sb + 1 == subs_per_group)) {
        const __m256i ones = _mm256_set1_epi16(1);
        for (int j = 0; j < NT; ++j) {
          for (int c = 0; c < 2; ++c) {
            dot[j][c] = _mm256_add_epi32(dot[j][c], _mm256_madd_epi16(pairs[j][c], ones));
            pairs[j][c] = _mm256_setzero_si256();
          }
        }
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

// 2:4 sparse, as in kernels_avx512.cc: weights as signed levels (2q - zero), activations biased to
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
        const __m256i code = _mm256_and_si256(_mm256_srli_epi16(v, 2 * k), three);
        const __m256i q = _mm256_sub_epi8(_mm256_add_epi8(code, code), zero_bytes);  // the level, W2Level
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

// W8: each 32-byte half of a 64-byte sub-block is 8 row lanes x 4 columns. vpmaddubsw (and
// vpdpbusd) take one unsigned operand: |q| meets sign(a, q), whose products are q a
// (|2 * 127 * 127| < 2^15, so no pair saturates).
template <int NT>
void W8Half(const W8View& w, const A8Batch& x, int tile, int half, int t0, float* y, int64_t ldy) {
  const W8Shape& s = w.shape;
  const int steps_per_group = s.group_size / 4;
  const int8_t* codes = w.codes + int64_t{tile} * (s.cols_padded() / 4) * 64 + 32 * half;
  __m256 out[NT];
  for (int j = 0; j < NT; ++j) out[j] = _mm256_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m256i dot[NT];
    for (int j = 0; j < NT; ++j) dot[j] = _mm256_setzero_si256();
    for (int k = g * steps_per_group; k < (g + 1) * steps_per_group; ++k) {
      // Prefetched as kernels_avx512.cc's W8Tile does (the second half finds it cached).
      if (half == 0) _mm_prefetch(reinterpret_cast<const char*>(codes + int64_t{k} * 64 + kReadSumAhead), _MM_HINT_T1);
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + int64_t{k} * 64));
      const __m256i magnitude = _mm256_abs_epi8(v);
      for (int j = 0; j < NT; ++j) dot[j] = DotAdd(dot[j], magnitude, _mm256_sign_epi8(BroadcastDword(x.codes(t0 + j) + 4 * k), v));
    }
    const __m256 scales = _mm256_loadu_ps(w.scales + W2ParamIndex(tile * kW2RowTile, g, s.groups()) + 8 * half);
    for (int j = 0; j < NT; ++j) out[j] = _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(dot[j]), out[j]);
  }
  for (int j = 0; j < NT; ++j) StoreRows(w, tile, half, y + (t0 + j) * ldy, _mm256_mul_ps(out[j], _mm256_set1_ps(x.scale(t0 + j))));
}

void MatMulW8A8Avx2(const W8View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  constexpr int kTokenBlock = 4;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    for (int half = 0; half < 2; ++half) {
      if (tile * kW2RowTile + 8 * half >= w.shape.rows) break;
      int t = 0;
      for (; t + kTokenBlock <= x.tokens(); t += kTokenBlock) W8Half<kTokenBlock>(w, x, tile, half, t, y, ldy);
      for (; t < x.tokens(); ++t) W8Half<1>(w, x, tile, half, t, y, ldy);
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

void MatMulF16Avx2(const uint16_t* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                   float* y, int64_t ldy) {
  DenseMatMul256(w, cols, x, tokens, ldx, row_begin, row_end, y, ldy);
}

void MatMulF32Avx2(const float* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                   float* y, int64_t ldy) {
  DenseMatMul256(w, cols, x, tokens, ldx, row_begin, row_end, y, ldy);
}

uint64_t ReadSumAvx2(const uint8_t* data, int64_t bytes) {
  __m256i sum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int64_t i = 0; i < bytes; i += 128) {
    for (int j = 0; j < 2; ++j) _mm_prefetch(reinterpret_cast<const char*>(data + i + kReadSumAhead + 64 * j), _MM_HINT_T1);
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

const CpuKernels ACCLLM_AVX2_TABLE = {ACCLLM_AVX2_PATH, ACCLLM_AVX2_NAME, MatMulW2A8Avx2, MatMulW8A8Avx2, MatMulF16Avx2, MatMulF32Avx2,
                                      Kv4Score256, Kv4Accumulate256, Kv4Quantize256, QuantizeA8256, F32Score256, F32Accumulate256, Hadamard256,
                                      Softmax256, SwiGlu256, ResidualRmsNorm256, Rope256, ReadSumAvx2};

}  // namespace accllm
