// AMX-INT8 kernels (Sapphire Rapids and later): the AVX-512 table with W2 x A8 and W8 x A8 on the
// tile unit for steps of 16 tokens or more (prefill, batched decode, the classifier of a batch).
// Compiled with -mamx-* and -mgfni for this file only; run only when the dispatcher found the
// features and the OS granted the tile state.
//
// TDPBSSD reads B as B[k][4n + i] = w[n][4k + i]. That is a W8 sub-block as stored, so W8 B tiles
// are loaded straight from the weights; and it is a W2 sub-block's 2-bit field k over its 64
// bytes, so W2 codes are expanded to their signed levels (2q - zero, the integers every path
// computes) in place. A tiles are 16 tokens' A8 codes. Each group's int32 sums come out exact and
// go through the same epilogue as every path (Y = fma(scale, float(I), Y) group after group, then
// x a_scale), so the results are bit-identical with the other paths'.
//
// Two ways through a row tile (16 weight rows), both software-pipelined: group g's products are
// issued, an earlier group's sums (stored then: a tile store does not forward to loads) are added,
// then group g's sums are stored. NarrowPass adds group g - 1's, ChunkPass group g - 2's.
// - Decode batches (one or two 16-token tiles; NarrowPass): group by group, each group's B rows
//   made ready right before its products, so that the vector unit expands group g + 1 while the
//   tile unit multiplies group g. One token tile keeps its 16 float accumulators in registers.
// - Larger steps (ChunkPass): the B rows of a chunk of groups (K = 1024: 16 KiB, in L1) are made
//   ready once and serve every token tile of the step in turn, each keeping its accumulators in
//   registers across the chunk.
#include <immintrin.h>

#include <algorithm>

#include "runtime/cpu/amx_tile_config.h"
#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

constexpr int kTileRows = 16;      // tokens per A and C tile
constexpr int kTileBytes = 64;     // bytes per tile row: K = 64 codes
constexpr int kChunkBRows = 256;   // B rows of one chunk of groups (16 KiB, K = 1024)
constexpr int kMaxPassTiles = 16;  // token tiles per pass over a row tile (256 tokens)
constexpr int kMaxGroupSize = kChunkBRows * 4;
// How many groups later ChunkPass adds a group's stored sums: loaded one group after the tile
// store, they still wait on it (a 64- or 128-token pass is 2-10% faster at two than at one).
constexpr int kChunkSumLag = 2;

// Tile registers: C 0-3 (a group's products need not wait for the previous group's sums to be
// stored), A 4-5 and B 6-7 (a load need not wait for the product still reading the register).
// GCC pastes the number into the instruction: literals only, hence the switches, inlined (a call
// would cost the accumulators held in registers: every zmm register is caller-saved).
[[gnu::always_inline]] inline void ZeroC(int c) {
  switch (c) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
  }
}

[[gnu::always_inline]] inline void StoreC(int c, int32_t* sums) {
  switch (c) {
    case 0: _tile_stored(0, sums, kTileBytes); break;
    case 1: _tile_stored(1, sums, kTileBytes); break;
    case 2: _tile_stored(2, sums, kTileBytes); break;
    default: _tile_stored(3, sums, kTileBytes); break;
  }
}

// A tile 4 + a: 16 tokens' codes from `codes` (rows `stride` apart).
[[gnu::always_inline]] inline void LoadA(int a, const int8_t* codes, int64_t stride) {
  if (a) {
    _tile_loadd(5, codes, stride);
  } else {
    _tile_loadd(4, codes, stride);
  }
}

// B tile 6 + b: 16 rows of 64 bytes.
[[gnu::always_inline]] inline void LoadB(int b, const uint8_t* rows) {
  if (b) {
    _tile_loadd(7, rows, kTileBytes);
  } else {
    _tile_loadd(6, rows, kTileBytes);
  }
}

// C tile c += A tile 4 + a x B tile 6 + b.
[[gnu::always_inline]] inline void Multiply(int c, int a, int b) {
  switch (c * 4 + a * 2 + b) {
    case 0: _tile_dpbssd(0, 4, 6); break;
    case 1: _tile_dpbssd(0, 4, 7); break;
    case 2: _tile_dpbssd(0, 5, 6); break;
    case 3: _tile_dpbssd(0, 5, 7); break;
    case 4: _tile_dpbssd(1, 4, 6); break;
    case 5: _tile_dpbssd(1, 4, 7); break;
    case 6: _tile_dpbssd(1, 5, 6); break;
    case 7: _tile_dpbssd(1, 5, 7); break;
    case 8: _tile_dpbssd(2, 4, 6); break;
    case 9: _tile_dpbssd(2, 4, 7); break;
    case 10: _tile_dpbssd(2, 5, 6); break;
    case 11: _tile_dpbssd(2, 5, 7); break;
    case 12: _tile_dpbssd(3, 4, 6); break;
    case 13: _tile_dpbssd(3, 4, 7); break;
    case 14: _tile_dpbssd(3, 5, 6); break;
    default: _tile_dpbssd(3, 5, 7); break;
  }
}

// 2q for code k of every byte: bits 2k and 2k + 1 of the byte moved to bits 1 and 2, as one
// affine map over GF(2) (GF2P8AFFINEQB: output bit i is the parity of the input byte AND matrix
// byte 7 - i).
constexpr uint64_t TwiceCodeMatrix(int k) {
  return (uint64_t{1} << (2 * k)) << 48 | (uint64_t{1} << (2 * k + 1)) << 40;
}

// The B rows of W2 groups: the codes expanded to levels, either a chunk of groups at a time
// (PrepareChunk) or group by group in two alternating halves (PrepareGroup).
class W2Source {
 public:
  explicit W2Source(const W2View& w) : w_(w), groups_(w.shape.groups()) {}
  int groups() const { return groups_; }
  int group_size() const { return w_.shape.group_size; }

  void PrepareChunk(int tile, int g0, int g1) {
    g0_ = g0;
    for (int g = g0; g < g1; ++g) ExpandGroup(tile, g, rows_[(g - g0) * group_size() / 4]);
  }
  // note: call only with group_size() <= kMaxGroupSize / 2.
  void PrepareGroup(int tile, int g) {
    g0_ = g & ~1;
    ExpandGroup(tile, g, rows_[(g & 1) * group_size() / 4]);
  }
  // The 16 B rows of K step `step` of group g (prepared last).
  const uint8_t* B(int g, int step) const { return rows_[(g - g0_) * group_size() / 4 + kTileRows * step]; }
  __m512 Scales(int tile, int g) const {
    return _mm512_cvtph_ps(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(w_.scales + W2ParamIndex(tile * kW2RowTile, g, groups_))));
  }

 private:
  // Group g's levels for the 16 rows of `tile`, as its B rows. The next row tile's codes of the
  // group are fetched meanwhile, as the AVX-512 kernels do: a decode batch waits on its weights,
  // and a prefill's weights stream from DRAM too (prefill 128 0-7% faster than without).
  void ExpandGroup(int tile, int g, uint8_t* b_rows) const {
    const W2Shape& s = w_.shape;
    const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, groups_);
    const __m512i zero_bytes =
        _mm512_mullo_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w_.zeros + pi))),
                           _mm512_set1_epi32(0x01010101));
    const __m512i twice[4] = {_mm512_set1_epi64(TwiceCodeMatrix(0)), _mm512_set1_epi64(TwiceCodeMatrix(1)),
                              _mm512_set1_epi64(TwiceCodeMatrix(2)), _mm512_set1_epi64(TwiceCodeMatrix(3))};
    const int subs_per_group = s.group_size / kW2ColTile;
    const int64_t subs_per_tile = s.cols_padded() / kW2ColTile;
    const uint8_t* first = w_.codes + (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes;
    for (int sb = 0; sb < subs_per_group; ++sb) {
      _mm_prefetch(reinterpret_cast<const char*>(first + (sb + subs_per_tile) * kW2SubBlockBytes), _MM_HINT_T1);
      const __m512i v = _mm512_loadu_si512(first + sb * kW2SubBlockBytes);
      for (int k = 0; k < 4; ++k) {
        _mm512_store_si512(b_rows + (4 * sb + k) * kTileBytes,
                           _mm512_sub_epi8(_mm512_gf2p8affine_epi64_epi8(v, twice[k], 0), zero_bytes));
      }
    }
  }

  const W2View& w_;
  const int groups_;
  int g0_ = 0;
  alignas(64) uint8_t rows_[kChunkBRows][kTileBytes];
};

// The B rows of W8 groups: the weights themselves. Preparing them only prefetches the next row
// tile's.
class W8Source {
 public:
  explicit W8Source(const W8View& w)
      : w_(w), groups_(w.shape.groups()), tile_bytes_(int64_t{w.shape.cols_padded()} * kW2RowTile) {}
  int groups() const { return groups_; }
  int group_size() const { return w_.shape.group_size; }

  void PrepareChunk(int tile, int g0, int g1) {
    tile_codes_ = reinterpret_cast<const uint8_t*>(w_.codes) + tile * tile_bytes_;
    const uint8_t* next = tile_codes_ + tile_bytes_ + int64_t{g0} * group_size() * kW2RowTile;
    for (int64_t i = 0; i < int64_t{g1 - g0} * group_size() * kW2RowTile; i += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(next + i), _MM_HINT_T1);
    }
  }
  void PrepareGroup(int tile, int g) { PrepareChunk(tile, g, g + 1); }
  const uint8_t* B(int g, int step) const {
    return tile_codes_ + (int64_t{g} * group_size() + int64_t{step} * kTileBytes) * kW2RowTile;
  }
  __m512 Scales(int tile, int g) const {
    return _mm512_loadu_ps(w_.scales + W2ParamIndex(tile * kW2RowTile, g, groups_));
  }

 private:
  const W8View& w_;
  const int groups_;
  const int64_t tile_bytes_;  // codes of a row tile
  const uint8_t* tile_codes_ = nullptr;
};

// Float accumulators of 16 tokens' 16 rows, in registers.
using TileAccumulators = __m512[kTileRows];

// acc[m] = fma(scales, float(sums[m]), acc[m]) for the 16 tokens of a tile.
inline void AddSums(TileAccumulators& acc, __m512 scales, const int32_t (*sums)[kW2RowTile]) {
#pragma GCC unroll 16
  for (int m = 0; m < kTileRows; ++m) {
    acc[m] = _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(_mm512_load_si512(sums[m])), acc[m]);
  }
}
// The same into accumulators in memory.
inline void AddSums(float (*acc)[kW2RowTile], __m512 scales, const int32_t (*sums)[kW2RowTile]) {
  for (int m = 0; m < kTileRows; ++m) {
    _mm512_store_ps(acc[m], _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(_mm512_load_si512(sums[m])), _mm512_load_ps(acc[m])));
  }
}

// y rows of tokens [t0, t0 + tokens) = acc x each token's A8 scale, the tile's valid rows only.
void StoreOutputs(const float (*acc)[kW2RowTile], const A8Batch& x, int tile, int valid_rows, int t0, int tokens,
                  float* y, int64_t ldy) {
  const __mmask16 mask = valid_rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << valid_rows) - 1);
  for (int m = 0; m < tokens; ++m) {
    _mm512_mask_storeu_ps(y + (t0 + m) * ldy + tile * kW2RowTile, mask,
                          _mm512_mul_ps(_mm512_load_ps(acc[m]), _mm512_set1_ps(x.scale(t0 + m))));
  }
}

// All `tokens` (16-32: kTiles token tiles) of one row tile, group by group.
template <int kTiles, typename Source>
void NarrowPass(Source& src, const A8Batch& x, int tile, int valid_rows, int tokens, float* y, int64_t ldy) {
  const int steps = src.group_size() / kTileBytes;
  const int64_t stride = x.cols_padded();
  // C tile of token tile t for group g: by the group's parity first.
  const auto c_tile = [](int g, int t) { return (g & 1) * kTiles + t; };
  alignas(64) float acc[kTiles * kTileRows][kW2RowTile] = {};
  TileAccumulators r;
  if constexpr (kTiles == 1) {
#pragma GCC unroll 16
    for (int m = 0; m < kTileRows; ++m) r[m] = _mm512_setzero_ps();
  }
  // Each token tile's two sets of sums side by side: a group's loads and the other group's stores
  // are never a multiple of 4 KiB apart (the CPU would take them for the same address).
  alignas(64) int32_t sums[kTiles][2][kTileRows][kW2RowTile];
  const auto add = [&](int t, __m512 scales, const int32_t (*group_sums)[kW2RowTile]) {
    if constexpr (kTiles == 1) {
      AddSums(r, scales, group_sums);
    } else {
      AddSums(acc + kTileRows * t, scales, group_sums);
    }
  };
  __m512 previous_scales = _mm512_setzero_ps();
  int step_count = 0;
  for (int g = 0; g < src.groups(); ++g) {
    const int set = g & 1;
    src.PrepareGroup(tile, g);
    for (int t = 0; t < kTiles; ++t) ZeroC(c_tile(g, t));
    for (int k = 0; k < steps; ++k, ++step_count) {
      const int b = step_count & 1;
      LoadB(b, src.B(g, k));
      for (int t = 0; t < kTiles; ++t) {
        // One tile: A alternates by step as B does; two: each token tile its own A.
        const int a = kTiles == 1 ? b : t;
        LoadA(a, x.codes(kTileRows * t) + g * src.group_size() + k * kTileBytes, stride);
        Multiply(c_tile(g, t), a, b);
      }
    }
    if (g > 0) {
      for (int t = 0; t < kTiles; ++t) add(t, previous_scales, sums[t][set ^ 1]);
    }
    for (int t = 0; t < kTiles; ++t) StoreC(c_tile(g, t), &sums[t][set][0][0]);
    previous_scales = src.Scales(tile, g);
  }
  const int last = (src.groups() - 1) & 1;
  for (int t = 0; t < kTiles; ++t) add(t, previous_scales, sums[t][last]);
  if constexpr (kTiles == 1) {
#pragma GCC unroll 16
    for (int m = 0; m < kTileRows; ++m) _mm512_store_ps(acc[m], r[m]);
  }
  StoreOutputs(acc, x, tile, valid_rows, 0, tokens, y, ldy);
}

// Tokens [t0, t0 + tokens) (at most kMaxPassTiles token tiles) of one row tile, a chunk of groups
// at a time. A token tile's groups take the four C tiles in turn, and group g's sums are added
// after group g + kChunkSumLag's products are issued.
template <typename Source>
void ChunkPass(Source& src, const A8Batch& x, int tile, int valid_rows, int t0, int tokens, float* y, int64_t ldy) {
  const int token_tiles = (tokens + kTileRows - 1) / kTileRows;
  const int group_size = src.group_size(), groups = src.groups();
  const int steps = group_size / kTileBytes;
  const int chunk_groups = kMaxGroupSize / group_size;
  const int64_t stride = x.cols_padded();
  alignas(64) float acc[kMaxPassTiles * kTileRows][kW2RowTile];
  alignas(64) int32_t sums[4][kTileRows][kW2RowTile];  // a group's on its C tile's index
  for (int g0 = 0; g0 < groups; g0 += chunk_groups) {
    const int g1 = std::min(groups, g0 + chunk_groups);
    src.PrepareChunk(tile, g0, g1);
    for (int c = 0; c < token_tiles; ++c) {
      float(*tile_acc)[kW2RowTile] = acc + kTileRows * c;
      TileAccumulators r;
#pragma GCC unroll 16
      for (int m = 0; m < kTileRows; ++m) r[m] = g0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(tile_acc[m]);
      const int8_t* a = x.codes(t0 + kTileRows * c);
      int step_count = 0;
      for (int g = g0; g < g1; ++g) {
        const int c_tile = (g - g0) & 3;
        ZeroC(c_tile);
        for (int k = 0; k < steps; ++k, ++step_count) {
          const int odd = step_count & 1;
          LoadA(odd, a + g * group_size + k * kTileBytes, stride);
          LoadB(odd, src.B(g, k));
          Multiply(c_tile, odd, odd);
        }
        if (g - g0 >= kChunkSumLag) AddSums(r, src.Scales(tile, g - kChunkSumLag), sums[(g - kChunkSumLag - g0) & 3]);
        StoreC(c_tile, &sums[c_tile][0][0]);
      }
      for (int g = std::max(g0, g1 - kChunkSumLag); g < g1; ++g) AddSums(r, src.Scales(tile, g), sums[(g - g0) & 3]);
#pragma GCC unroll 16
      for (int m = 0; m < kTileRows; ++m) _mm512_store_ps(tile_acc[m], r[m]);
    }
  }
  StoreOutputs(acc, x, tile, valid_rows, t0, tokens, y, ldy);
}

template <typename Source>
void MatMul(Source& src, int rows, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  // Steps whose tokens are not a multiple of 16 load whole A tiles anyway (A8Batch keeps its codes
  // readable to a multiple of 16 tokens) and never store the rows past their tokens.
  ConfigureFullTiles();
  constexpr int kPassTokens = kMaxPassTiles * kTileRows;
  const int n = x.tokens();
  // Two halves of B rows for the narrow way: groups up to half a chunk.
  const bool narrow = n <= 2 * kTileRows && src.group_size() <= kMaxGroupSize / 2;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int valid_rows = std::min(kW2RowTile, rows - tile * kW2RowTile);
    if (narrow && n <= kTileRows) {
      NarrowPass<1>(src, x, tile, valid_rows, n, y, ldy);
    } else if (narrow) {
      NarrowPass<2>(src, x, tile, valid_rows, n, y, ldy);
    } else {
      for (int t0 = 0; t0 < n; t0 += kPassTokens) {
        ChunkPass(src, x, tile, valid_rows, t0, std::min(kPassTokens, n - t0), y, ldy);
      }
    }
  }
  _tile_release();
}

bool OnTiles(int tokens, int group_size) {
  return tokens >= kTileRows && group_size % kTileBytes == 0 && group_size <= kMaxGroupSize;
}

}  // namespace

// The table (kAmxKernels) is in kernels_avx512.cc: a constant aggregate, so that no code of this
// file runs before the dispatcher has checked the CPU.
void MatMulW2A8Amx(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  // 2:4 layers, steps too small to fill a tile, and group sizes the tiles do not divide stay on
  // AVX-512.
  if (w.shape.sparse24 || !OnTiles(x.tokens(), w.shape.group_size)) {
    kAvx512Kernels.matmul_w2a8(w, x, tile_begin, tile_end, y, ldy);
    return;
  }
  W2Source src(w);
  MatMul(src, w.shape.rows, x, tile_begin, tile_end, y, ldy);
}

void MatMulW8A8Amx(const W8View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  if (!OnTiles(x.tokens(), w.shape.group_size)) {
    kAvx512Kernels.matmul_w8a8(w, x, tile_begin, tile_end, y, ldy);
    return;
  }
  W8Source src(w);
  MatMul(src, w.shape.rows, x, tile_begin, tile_end, y, ldy);
}

}  // namespace accllm
