// AVX-512 (F, BW, VL, VNNI) kernels. Compiled with -mavx512* for this file only; run only when
// the dispatcher found the features. One 32-bit lane per weight row: a 64-byte W2 sub-block
// unpacks into four vectors of 16 rows x 4 codes that vpdpbusd multiplies with 4 activation bytes.
// Float sums keep the 8-lane order of runtime/common/lane_sum.h (kernels_float256.h).
#include <algorithm>
#include <immintrin.h>

#include <cstring>

#include "runtime/cpu/kernels.h"
#include "runtime/cpu/kernels_float256.h"

namespace accllm {
namespace {

inline __m512i BroadcastDword(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// acc += dpbusd(q, broadcast dword at p), with the broadcast folded into the instruction's
// memory operand (GCC does not fold it from intrinsics; a separate broadcast costs a uop).
inline __m512i DpbusdBroadcast(__m512i acc, __m512i q, const int8_t* p) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(q), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}

inline __m512i BroadcastQword(const int8_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return _mm512_set1_epi64(v);
}

// Adds group g's contribution to Y (16 row lanes) from the integer accumulators.
inline __m512 GroupEpilogue(const W2View& w, int tile, int g, __m512i dot, __m512i a_sum, __m512 y) {
  const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, w.shape.groups());
  const __m512i zeros = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros + pi)));
  const __m512 scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + pi)));
  const __m512i integer = _mm512_sub_epi32(_mm512_add_epi32(dot, dot), _mm512_mullo_epi32(zeros, a_sum));  // see W2Level
  return _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(integer), y);
}

template <class View>
inline void StoreRows(const View& w, int tile, float* out, __m512 y) {
  const int valid = w.shape.rows - tile * kW2RowTile;
  const __mmask16 mask = valid >= 16 ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
  _mm512_mask_storeu_ps(out + tile * kW2RowTile, mask, y);
}

// Dense W2, NT tokens at a time so that each unpacked weight vector is reused NT times.
//
// One token (decode): code plane k is used in place, without shifting it down:
// (v & 3 << 2k) = 4^k * q is at most 192, still an unsigned byte, and the 4^k factor comes out
// exactly at the group's end. Four accumulators (one per plane) hide vpdpbusd's latency.
// Several tokens: planes are shifted down once and shared by all tokens, with two accumulators
// per token (enough chains, and few enough registers not to spill).
template <int NT>
void DenseTile(const W2View& w, const A8Batch& x, int tile, int t0, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  const int subs_per_group = s.stored_group() / kW2ColTile;
  const int subs_per_tile = s.stored_cols() / kW2ColTile;
  constexpr int kChains = NT == 1 ? 4 : NT >= 8 ? 1 : 2;
  const __m512i three = _mm512_set1_epi8(3);
  __m512 out[NT];
  for (int j = 0; j < NT; ++j) out[j] = _mm512_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m512i dot[NT][kChains];
    for (int j = 0; j < NT; ++j) {
      for (int c = 0; c < kChains; ++c) dot[j][c] = _mm512_setzero_si512();
    }
    const uint8_t* block = w.codes + (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes;
    for (int sb = 0; sb < subs_per_group; ++sb) {
      const __m512i v = _mm512_loadu_si512(block + sb * kW2SubBlockBytes);
      // Weights stream from DRAM once per step: fetching the next row tile while this one
      // computes. The multi-token path would wait on memory without it, and one token's path
      // reached only half the read bandwidth on a Xeon's cores (1-4 threads: 1.5-1.8x with it).
      _mm_prefetch(reinterpret_cast<const char*>(block + (sb + subs_per_tile) * kW2SubBlockBytes), _MM_HINT_T1);
      const int col = g * s.group_size + sb * kW2ColTile;
      if constexpr (NT == 1) {
        const int8_t* a = x.codes(t0) + col;
        dot[0][0] = _mm512_dpbusd_epi32(dot[0][0], _mm512_and_si512(v, three), BroadcastDword(a));
        dot[0][1] = _mm512_dpbusd_epi32(dot[0][1], _mm512_and_si512(v, _mm512_slli_epi16(three, 2)), BroadcastDword(a + 4));
        dot[0][2] = _mm512_dpbusd_epi32(dot[0][2], _mm512_and_si512(v, _mm512_slli_epi16(three, 4)), BroadcastDword(a + 8));
        dot[0][3] = _mm512_dpbusd_epi32(dot[0][3], _mm512_and_si512(v, _mm512_slli_epi16(three, 6)), BroadcastDword(a + 12));
      } else {
        const __m512i q0 = _mm512_and_si512(v, three);
        const __m512i q1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), three);
        const __m512i q2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), three);
        const __m512i q3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), three);
        for (int j = 0; j < NT; ++j) {
          const int8_t* a = x.codes(t0 + j) + col;
          dot[j][0] = DpbusdBroadcast(dot[j][0], q0, a);
          dot[j][1 % kChains] = DpbusdBroadcast(dot[j][1 % kChains], q1, a + 4);
          dot[j][0] = DpbusdBroadcast(dot[j][0], q2, a + 8);
          dot[j][1 % kChains] = DpbusdBroadcast(dot[j][1 % kChains], q3, a + 12);
        }
      }
    }
    for (int j = 0; j < NT; ++j) {
      __m512i sum;
      if constexpr (NT == 1) {
        sum = _mm512_add_epi32(_mm512_add_epi32(dot[0][0], _mm512_srai_epi32(dot[0][1], 2)),
                               _mm512_add_epi32(_mm512_srai_epi32(dot[0][2], 4), _mm512_srai_epi32(dot[0][3], 6)));
      } else if constexpr (kChains == 2) {
        sum = _mm512_add_epi32(dot[j][0], dot[j][1]);
      } else {
        sum = dot[j][0];
      }
      out[j] = GroupEpilogue(w, tile, g, sum, _mm512_set1_epi32(x.group_sums(t0 + j)[g]), out[j]);
    }
  }
  for (int j = 0; j < NT; ++j) {
    StoreRows(w, tile, y + (t0 + j) * ldy, _mm512_mul_ps(out[j], _mm512_set1_ps(x.scale(t0 + j))));
  }
}

// 2:4 sparse W2: each 4-code vector covers 2 groups of 4 input columns; vpshufb fetches, per row
// lane, the activations at the kept positions from an 8-byte window broadcast to every 128 bits.
// The weights enter as their signed levels (l = 2q - zero, W2Level) and the activations are
// biased to unsigned (a + 128), so the per-token work is one shuffle and one vpdpbusd; the bias
// comes out once per group from the weights alone:
//   sum l a = sum l (a + 128) - 128 sum l
template <int NT>
void SparseTile(const W2View& w, const A8Batch& x, int tile, int t0, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  const int subs_per_group = s.stored_group() / kW2ColTile;
  const int subs_per_tile = s.stored_cols() / kW2ColTile;
  constexpr int kChains = NT >= 8 ? 1 : 2;
  const __m512i three = _mm512_set1_epi8(3);
  const __m512i ones = _mm512_set1_epi8(1);
  // Byte b of every lane: kept weight b covers input group b / 2 of the 8-column window.
  const __m512i base = _mm512_set1_epi32(0x04040000);
  __m512 out[NT];
  for (int j = 0; j < NT; ++j) out[j] = _mm512_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, s.groups());
    // Each row lane's zero point in all four of its bytes.
    const __m512i zero_bytes = _mm512_mullo_epi32(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros + pi))), _mm512_set1_epi32(0x01010101));
    __m512i dot[NT][kChains], weight_sum[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int j = 0; j < NT; ++j) {
      for (int c = 0; c < kChains; ++c) dot[j][c] = _mm512_setzero_si512();
    }
    const int64_t first = (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes;
    for (int sb = 0; sb < subs_per_group; ++sb) {
      const __m512i v = _mm512_loadu_si512(w.codes + first + sb * kW2SubBlockBytes);
      const __m512i u = _mm512_loadu_si512(w.sparse_index + first + sb * kW2SubBlockBytes);
      const int64_t next_tile = first + (sb + subs_per_tile) * kW2SubBlockBytes;  // as in DenseTile
      _mm_prefetch(reinterpret_cast<const char*>(w.codes + next_tile), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(w.sparse_index + next_tile), _MM_HINT_T1);
      const int col = g * s.group_size + sb * 2 * kW2ColTile;  // original columns
      for (int k = 0; k < 4; ++k) {
        const __m512i code = _mm512_and_si512(_mm512_srli_epi16(v, 2 * k), three);
        const __m512i q = _mm512_sub_epi8(_mm512_add_epi8(code, code), zero_bytes);  // the level, W2Level
        const __m512i index = _mm512_add_epi8(base, _mm512_and_si512(_mm512_srli_epi16(u, 2 * k), three));
        weight_sum[k & 1] = _mm512_dpbusd_epi32(weight_sum[k & 1], ones, q);
        for (int j = 0; j < NT; ++j) {
          const auto* biased = reinterpret_cast<const int8_t*>(x.biased_codes(t0 + j));
          const __m512i a = _mm512_shuffle_epi8(BroadcastQword(biased + col + 8 * k), index);
          dot[j][k % kChains] = _mm512_dpbusd_epi32(dot[j][k % kChains], a, q);
        }
      }
    }
    const __m512i bias = _mm512_slli_epi32(_mm512_add_epi32(weight_sum[0], weight_sum[1]), 7);
    const __m512 scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + pi)));
    for (int j = 0; j < NT; ++j) {
      const __m512i sum = kChains == 2 ? _mm512_add_epi32(dot[j][0], dot[j][kChains - 1]) : dot[j][0];
      out[j] = _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, bias)), out[j]);
    }
  }
  for (int j = 0; j < NT; ++j) {
    StoreRows(w, tile, y + (t0 + j) * ldy, _mm512_mul_ps(out[j], _mm512_set1_ps(x.scale(t0 + j))));
  }
}

template <bool kSparse, int NT>
void Tile(const W2View& w, const A8Batch& x, int tile, int t0, float* y, int64_t ldy) {
  if constexpr (kSparse) {
    SparseTile<NT>(w, x, tile, t0, y, ldy);
  } else {
    DenseTile<NT>(w, x, tile, t0, y, ldy);
  }
}

template <bool kSparse>
void MatMul(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    int t = 0;
    for (; t + 8 <= x.tokens(); t += 8) Tile<kSparse, 8>(w, x, tile, t, y, ldy);
    for (; t + 4 <= x.tokens(); t += 4) Tile<kSparse, 4>(w, x, tile, t, y, ldy);
    for (; t < x.tokens(); ++t) Tile<kSparse, 1>(w, x, tile, t, y, ldy);
  }
}

// W8: one 64-byte load is 16 row lanes x 4 columns. The activations enter biased to unsigned
// (a + 128), the signed weights as they are, and 128 * sum(q) comes off once per group:
//   sum q a = sum q (a + 128) - 128 sum q
template <int NT>
void W8Tile(const W8View& w, const A8Batch& x, int tile, int t0, float* y, int64_t ldy) {
  const W8Shape& s = w.shape;
  const int steps_per_group = s.group_size / 4;
  const int8_t* codes = w.codes + int64_t{tile} * (s.cols_padded() / 4) * 64;
  __m512 out[NT];
  for (int j = 0; j < NT; ++j) out[j] = _mm512_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m512i dot[NT];
    for (int j = 0; j < NT; ++j) dot[j] = _mm512_setzero_si512();
    for (int k = g * steps_per_group; k < (g + 1) * steps_per_group; ++k) {
      const __m512i v = _mm512_loadu_si512(codes + int64_t{k} * 64);
      // The classifier streams from DRAM like the W2 layers (DenseTile): prefetched as the read
      // probe is, kReadSumAhead bytes ahead, on across row tiles. Without it, a Xeon's batch-1
      // classifier took 6.8-7.4% of the step at 4-8 threads for 6.9% of the bytes (5.8-6.4% with).
      _mm_prefetch(reinterpret_cast<const char*>(codes + int64_t{k} * 64 + kReadSumAhead), _MM_HINT_T1);
      for (int j = 0; j < NT; ++j) {
        dot[j] = _mm512_dpbusd_epi32(dot[j], BroadcastDword(reinterpret_cast<const int8_t*>(x.biased_codes(t0 + j)) + 4 * k), v);
      }
    }
    const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, s.groups());
    const __m512i bias = _mm512_slli_epi32(_mm512_loadu_si512(w.sums + pi), 7);
    const __m512 scales = _mm512_loadu_ps(w.scales + pi);
    for (int j = 0; j < NT; ++j) out[j] = _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[j], bias)), out[j]);
  }
  for (int j = 0; j < NT; ++j) {
    StoreRows(w, tile, y + (t0 + j) * ldy, _mm512_mul_ps(out[j], _mm512_set1_ps(x.scale(t0 + j))));
  }
}

void MatMulW8A8Avx512(const W8View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    int t = 0;
    for (; t + 8 <= x.tokens(); t += 8) W8Tile<8>(w, x, tile, t, y, ldy);
    for (; t + 4 <= x.tokens(); t += 4) W8Tile<4>(w, x, tile, t, y, ldy);
    for (; t < x.tokens(); ++t) W8Tile<1>(w, x, tile, t, y, ldy);
  }
}

void MatMulW2A8Avx512(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  if (w.shape.sparse24) {
    MatMul<true>(w, x, tile_begin, tile_end, y, ldy);
  } else {
    MatMul<false>(w, x, tile_begin, tile_end, y, ldy);
  }
}

// Eight weights of rows a and b side by side (lanes 0-7: row a), as floats: a 512-bit register
// holds two rows' 8-lane sums, so that each row's sum keeps the order of lane_sum.h.
inline __m512 LoadRowPair(const uint16_t* a, const uint16_t* b) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
inline __m512 LoadRowPair(const float* a, const float* b) {
  const __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(a)));
  return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_loadu_ps(b)), 1));
}
// Eight activations in both halves.
inline __m512 BroadcastEight(const float* x) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x))));
}

// NP row pairs x NT tokens per pass: each loaded weight vector is used NT times, each activation
// vector NP times, and NP * NT independent FMA chains hide the FMA latency.
template <int NP, int NT, typename W>
void DenseBlock(const W* w, int cols, const float* x, int t0, int64_t ldx, int r0, float* y, int64_t ldy) {
  const int vec_cols = cols / 8 * 8;
  __m512 acc[NP][NT];
  for (int i = 0; i < NP; ++i) {
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (int c = 0; c < vec_cols; c += 8) {
    __m512 wv[NP];
    for (int i = 0; i < NP; ++i) {
      wv[i] = LoadRowPair(w + int64_t{r0 + 2 * i} * cols + c, w + int64_t{r0 + 2 * i + 1} * cols + c);
    }
    for (int j = 0; j < NT; ++j) {
      const __m512 xv = BroadcastEight(x + (t0 + j) * ldx + c);
      for (int i = 0; i < NP; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < 2 * NP; ++i) {
    const W* row = w + int64_t{r0 + i} * cols;
    for (int j = 0; j < NT; ++j) {
      const float* xt = x + (t0 + j) * ldx;
      const __m512d pair = _mm512_castps_pd(acc[i / 2][j]);
      float sum = HorizontalSum(_mm256_castpd_ps(i % 2 == 0 ? _mm512_castpd512_pd256(pair) : _mm512_extractf64x4_pd(pair, 1)));
      for (int c = vec_cols; c < cols; ++c) sum = std::fma(WeightAt(row + c), xt[c], sum);
      y[(t0 + j) * ldy + r0 + i] = sum;
    }
  }
}

// Rows in blocks small enough to stay in L2 while every token passes over them.
template <typename W>
void DenseMatMul(const W* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end, float* y,
                 int64_t ldy) {
  constexpr int kRowBlock = 64;
  for (int rb = row_begin; rb < row_end; rb += kRowBlock) {
    const int re = std::min(row_end, rb + kRowBlock);
    int t = 0;
    for (; t + 4 <= tokens; t += 4) {
      int r = rb;
      for (; r + 4 <= re; r += 4) DenseBlock<2, 4>(w, cols, x, t, ldx, r, y, ldy);
      for (; r < re; ++r) DenseBlock256<1, 4>(w, cols, x, t, ldx, r, y, ldy);
    }
    for (; t < tokens; ++t) {
      int r = rb;
      for (; r + 4 <= re; r += 4) DenseBlock<2, 1>(w, cols, x, t, ldx, r, y, ldy);
      for (; r < re; ++r) DenseBlock256<1, 1>(w, cols, x, t, ldx, r, y, ldy);
    }
  }
}

void MatMulF16Avx512(const uint16_t* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin,
                     int row_end, float* y, int64_t ldy) {
  DenseMatMul(w, cols, x, tokens, ldx, row_begin, row_end, y, ldy);
}

void MatMulF32Avx512(const float* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                     float* y, int64_t ldy) {
  DenseMatMul(w, cols, x, tokens, ldx, row_begin, row_end, y, ldy);
}

// 32 code bytes (64 nibbles) to 64 bytes in element order: low nibble first.
inline __m512i UnpackNibbles(const uint8_t* codes) {
  const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes)));
  return _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi16(0x0f)),
                         _mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0xf0)), 4));
}

template <int I>
inline __m512 Lane(__m512i bytes) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, I)));
}

// 8 floats from 8 code bytes per half: lanes 0-7 from 128-bit lane I's low 8 bytes, 8-15 from its high 8.
template <int I>
inline __m512 HalvesOf(__m512i pairs) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(pairs, I)));
}

// KV4 scores of 2 * NP keys, two to a register: lanes 0-7 hold key 2p's 8-lane sums and lanes 8-15
// key 2p + 1's, each lane adding its dimensions in the 256-bit kernels' order (Kv4ScoreKeys256),
// so that every score is theirs bit for bit with half the conversions and multiply-adds.
template <int NP>
inline void Kv4ScorePairs(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int head_size,
                          float scale, float* scores) {
  const int64_t key_bytes = head_size / 2;
  __m512 acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = _mm512_setzero_ps();
  for (int d = 0; d < head_size; d += 64) {
    __m512 qv[8];
    for (int j = 0; j < 8; ++j) qv[j] = BroadcastEight(q + d + 8 * j);
    for (int p = 0; p < NP; ++p) {
      const __m512i a = UnpackNibbles(codes + 2 * p * key_bytes + d / 2);
      const __m512i b = UnpackNibbles(codes + (2 * p + 1) * key_bytes + d / 2);
      // Per 128-bit lane j: dimensions d + 16j .. d + 16j + 7 of both keys (lo), then the next 8 (hi).
      const __m512i lo = _mm512_unpacklo_epi64(a, b), hi = _mm512_unpackhi_epi64(a, b);
      acc[p] = _mm512_fmadd_ps(qv[0], HalvesOf<0>(lo), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[1], HalvesOf<0>(hi), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[2], HalvesOf<1>(lo), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[3], HalvesOf<1>(hi), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[4], HalvesOf<2>(lo), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[5], HalvesOf<2>(hi), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[6], HalvesOf<3>(lo), acc[p]);
      acc[p] = _mm512_fmadd_ps(qv[7], HalvesOf<3>(hi), acc[p]);
    }
  }
  for (int p = 0; p < NP; ++p) {
    const __m512d pair = _mm512_castps_pd(acc[p]);
    const float sums[2] = {HorizontalSum(_mm256_castpd_ps(_mm512_castpd512_pd256(pair))),
                           HorizontalSum(_mm256_castpd_ps(_mm512_extractf64x4_pd(pair, 1)))};
    for (int k = 0; k < 2; ++k) {
      const Kv4Params& kp = params[2 * p + k];
      scores[2 * p + k] = scale * (_cvtsh_ss(kp.scale) * sums[k] + _cvtsh_ss(kp.min) * q_sum);
    }
  }
}

void Kv4ScoreAvx512(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count, int head_size,
                    float scale, float* scores) {
  if (head_size % 64 != 0) return Kv4Score256(q, q_sum, codes, params, count, head_size, scale, scores);
  const int64_t key_bytes = head_size / 2;
  int i = 0;
  for (; i + 8 <= count; i += 8) Kv4ScorePairs<4>(q, q_sum, codes + i * key_bytes, params + i, head_size, scale, scores + i);
  for (; i + 2 <= count; i += 2) Kv4ScorePairs<1>(q, q_sum, codes + i * key_bytes, params + i, head_size, scale, scores + i);
  if (i < count) Kv4Score256(q, q_sum, codes + i * key_bytes, params + i, count - i, head_size, scale, scores + i);
}

float Kv4AccumulateAvx512(float* out, const float* p, const uint8_t* codes, const Kv4Params* params, int count,
                          int head_size) {
  if (head_size % 64 != 0) return Kv4AccumulateScalar(out, p, codes, params, count, head_size);
  float min_sum = 0.0f;
  for (int d = 0; d < head_size; d += 64) {
    __m512 acc[4];
    for (int j = 0; j < 4; ++j) acc[j] = _mm512_loadu_ps(out + d + 16 * j);
    for (int i = 0; i < count; ++i) {
      const __m512i bytes = UnpackNibbles(codes + int64_t{i} * (head_size / 2) + d / 2);
      const __m512 ps = _mm512_set1_ps(p[i] * _cvtsh_ss(params[i].scale));
      acc[0] = _mm512_fmadd_ps(ps, Lane<0>(bytes), acc[0]);
      acc[1] = _mm512_fmadd_ps(ps, Lane<1>(bytes), acc[1]);
      acc[2] = _mm512_fmadd_ps(ps, Lane<2>(bytes), acc[2]);
      acc[3] = _mm512_fmadd_ps(ps, Lane<3>(bytes), acc[3]);
    }
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(out + d + 16 * j, acc[j]);
  }
  for (int i = 0; i < count; ++i) min_sum += p[i] * _cvtsh_ss(params[i].min);
  return min_sum;
}

// Exp256 (exp.h's Exp) sixteen lanes wide: the same operations, the special cases by masks.
inline __m512 Exp512(__m512 x) {
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(kExpMinArgument)), _mm512_set1_ps(kExpMaxArgument));
  const __m512 shifter = _mm512_set1_ps(kExpRoundShifter);
  const __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kExpLog2e)), shifter), shifter);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpLn2Hi), xc));
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  const __m512 e_r = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  const __m512i exponent = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  __m512 y = _mm512_mul_ps(e_r, _mm512_castsi512_ps(exponent));
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMaxArgument), _CMP_GT_OQ), y,
                           _mm512_set1_ps(std::numeric_limits<float>::infinity()));
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMinArgument), _CMP_LT_OQ), y, _mm512_setzero_ps());
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

// SwiGlu256 sixteen at a time; the rest as SwiGlu256 does it.
void SwiGlu512(float* h, const float* h2, int n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 val = _mm512_loadu_ps(h + i);
    const __m512 negated = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(val), sign));  // xor_ps needs AVX512DQ
    const __m512 silu = _mm512_mul_ps(val, _mm512_div_ps(one, _mm512_add_ps(one, Exp512(negated))));
    _mm512_storeu_ps(h + i, _mm512_mul_ps(silu, _mm512_loadu_ps(h2 + i)));
  }
  SwiGlu256(h + i, h2 + i, n - i);
}

uint64_t ReadSumAvx512(const uint8_t* data, int64_t bytes) {
  __m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  for (int64_t i = 0; i < bytes; i += 256) {
    for (int j = 0; j < 4; ++j) _mm_prefetch(reinterpret_cast<const char*>(data + i + kReadSumAhead + 64 * j), _MM_HINT_T1);
    for (int j = 0; j < 4; ++j) sum[j] = _mm512_add_epi64(sum[j], _mm512_loadu_si512(data + i + 64 * j));
  }
  return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(sum[0], sum[1]), _mm512_add_epi64(sum[2], sum[3])));
}

}  // namespace

namespace {

// NQ queries x ND registers of dimensions from d: each value vector loaded once for the NQ queries.
template <int NQ, int ND>
void F32AccumulateTile(float* out, int64_t ld_out, const float* p, int64_t ld_p, const float* values, int count,
                       int head_size, int d) {
  __m512 acc[NQ][ND];
  for (int j = 0; j < NQ; ++j) {
    for (int k = 0; k < ND; ++k) acc[j][k] = _mm512_loadu_ps(out + j * ld_out + d + 16 * k);
  }
  for (int i = 0; i < count; ++i) {
    const float* v = values + int64_t{i} * head_size + d;
    __m512 vv[ND];
    for (int k = 0; k < ND; ++k) vv[k] = _mm512_loadu_ps(v + 16 * k);
    for (int j = 0; j < NQ; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j * ld_p + i]);
      for (int k = 0; k < ND; ++k) acc[j][k] = _mm512_fmadd_ps(pj, vv[k], acc[j][k]);
    }
  }
  for (int j = 0; j < NQ; ++j) {
    for (int k = 0; k < ND; ++k) _mm512_storeu_ps(out + j * ld_out + d + 16 * k, acc[j][k]);
  }
}

template <int NQ>
void F32AccumulateQueries(float* out, int64_t ld_out, const float* p, int64_t ld_p, const float* values, int count,
                          int head_size) {
  int d = 0;
  for (; d + 64 <= head_size; d += 64) F32AccumulateTile<NQ, 4>(out, ld_out, p, ld_p, values, count, head_size, d);
  for (; d < head_size; d += 16) F32AccumulateTile<NQ, 1>(out, ld_out, p, ld_p, values, count, head_size, d);
}

// Hadamard butterflies within each 16-lane register: lanes in `upper` hold x[j + len] and become
// a - b (partner - self), the others x[j] and become a + b (self + partner).
__m512 InRegisterButterfly512(__m512 self, __m512 partner, __mmask16 upper) {
  return _mm512_mask_sub_ps(_mm512_add_ps(self, partner), upper, partner, self);
}

// The passes of length 1, 2, 4 and 8 over one register.
__m512 InRegisterPasses512(__m512 v) {
  v = InRegisterButterfly512(v, _mm512_permute_ps(v, 0xB1), 0xAAAA);
  v = InRegisterButterfly512(v, _mm512_permute_ps(v, 0x4E), 0xCCCC);
  v = InRegisterButterfly512(v, _mm512_shuffle_f32x4(v, v, 0xB1), 0xF0F0);  // 128-bit lanes swapped in pairs
  return InRegisterButterfly512(v, _mm512_shuffle_f32x4(v, v, 0x4E), 0xFF00);  // 256-bit halves swapped
}

// Hadamard512 of kN values held in registers from load to store (heads of 64 to 256 values).
template <int kN>
void HadamardInRegisters512(float* x) {
  constexpr int kRegisters = kN / 16;
  __m512 v[kRegisters];
#pragma GCC unroll 16
  for (int r = 0; r < kRegisters; ++r) v[r] = InRegisterPasses512(_mm512_loadu_ps(x + 16 * r));
#pragma GCC unroll 16
  for (int len = 1; len < kRegisters; len <<= 1) {
#pragma GCC unroll 16
    for (int j = 0; j < kRegisters; ++j) {
      if ((j & len) != 0) continue;
      const int partner = (j | len) & (kRegisters - 1);  // j + len, in bounds as the compiler can see
      const __m512 a = v[j], b = v[partner];
      v[j] = _mm512_add_ps(a, b);
      v[partner] = _mm512_sub_ps(a, b);
    }
  }
  const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(static_cast<float>(kN)));
#pragma GCC unroll 16
  for (int r = 0; r < kRegisters; ++r) _mm512_storeu_ps(x + 16 * r, _mm512_mul_ps(v[r], scale));
}

// Hadamard (runtime/common/hadamard.h) sixteen lanes at a time, as Hadamard256 eight at a time:
// every element through the same adds in the same passes, so the same bits.
void Hadamard512(float* x, int n) {
  if (n < 16 || !IsPowerOfTwo(n)) return Hadamard256(x, n);
  if (n == 64) return HadamardInRegisters512<64>(x);
  if (n == 128) return HadamardInRegisters512<128>(x);
  if (n == 256) return HadamardInRegisters512<256>(x);
  for (int i = 0; i < n; i += 16) _mm512_storeu_ps(x + i, InRegisterPasses512(_mm512_loadu_ps(x + i)));
  for (int len = 16; len < n; len <<= 1) {
    for (int i = 0; i < n; i += 2 * len) {
      for (int j = i; j < i + len; j += 16) {
        const __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + len);
        _mm512_storeu_ps(x + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(x + j + len, _mm512_sub_ps(a, b));
      }
    }
  }
  const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(static_cast<float>(n)));
  for (int i = 0; i < n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), scale));
}

}  // namespace

void F32AccumulateAvx512(float* out, int64_t ld_out, const float* p, int64_t ld_p, int queries, const float* values,
                         int count, int head_size) {
  if (head_size % 16 != 0) return F32AccumulateScalar(out, ld_out, p, ld_p, queries, values, count, head_size);
  int j = 0;
  for (; j + 4 <= queries; j += 4) F32AccumulateQueries<4>(out + j * ld_out, ld_out, p + j * ld_p, ld_p, values, count, head_size);
  for (; j < queries; ++j) F32AccumulateQueries<1>(out + j * ld_out, ld_out, p + j * ld_p, ld_p, values, count, head_size);
}

const CpuKernels kAvx512Kernels = {CpuPath::kAvx512, "avx512", MatMulW2A8Avx512, MatMulW8A8Avx512, MatMulF16Avx512, MatMulF32Avx512,
                                   Kv4ScoreAvx512, Kv4AccumulateAvx512, Kv4Quantize256, QuantizeA8256, F32Score256, F32AccumulateAvx512,
                                   Hadamard512, Softmax256, SwiGlu512, ResidualRmsNorm256, Rope256, ReadSumAvx512};

// W2 x A8 and W8 x A8 on AMX-INT8 tiles (kernels_amx.cc), everything else as AVX-512.
void MatMulW2A8Amx(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy);
void MatMulW8A8Amx(const W8View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy);
const CpuKernels kAmxKernels = {CpuPath::kAmx,   "amx",           MatMulW2A8Amx, MatMulW8A8Amx,       MatMulF16Avx512,
                                MatMulF32Avx512, Kv4ScoreAvx512,  Kv4AccumulateAvx512, Kv4Quantize256, QuantizeA8256, F32Score256, F32AccumulateAvx512,
                                Hadamard512,     Softmax256,   SwiGlu512, ResidualRmsNorm256, Rope256, ReadSumAvx512};

}  // namespace accllm
