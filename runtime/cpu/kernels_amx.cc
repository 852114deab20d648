// AMX-INT8 kernels (Sapphire Rapids and later): the AVX-512 table with W2 x A8 on the tile unit
// for steps of 16 tokens or more (prefill, batched decode). Compiled with -mamx-* for this file
// only; run only when the dispatcher found the features and the OS granted the tile state.
//
// Per row tile (16 weight rows) and group, a B tile is built from the group's W2 sub-blocks: the
// codes expanded to signed levels (2q - zero, the same integers every path computes), which sit
// in exactly the layout TDPBSSD reads (B[k][4n + i] = w[n][4k + i]: a sub-block's 2-bit field k
// over its 64 bytes is one B row). A tiles are 16 tokens' activation bytes straight from the A8
// batch. The group's int32 sums come out exact and go through the same epilogue as the other
// paths (Y = fma(scale, float(I), Y) per group, then x a_scale), so results are bit-identical.
#include <immintrin.h>

#include <algorithm>

#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

constexpr int kTileRows = 16;       // tokens per A/C tile
constexpr int kTileBytes = 64;      // bytes per tile row (K = 64 activation bytes)
constexpr int kMaxGroupSize = 1024;

// Two ways through a row tile, by the step's size (measured on a 16-core Xeon, Llama-2-7B):
// - narrow (decode batches of 16-32 tokens): one or two token tiles, software pipelined by a group
//   (NarrowBlock); 1.1x the wide way's batch-16 decode;
// - wide (prefill, larger batches): up to 64 tokens share each expanded group (WideBlock); 1.1x
//   the narrow way's prefill.
constexpr int kNarrowMaxTokens = 32;
constexpr int kWideTokenTiles = 4;

// Tile registers, narrow: C 0-3 (token tile t of group g in (g & 1) * 2 + t, so that a group's
// products need not wait for the previous group's sums to be stored), A 4-5 by token tile, B 6-7
// by K step (a load need not wait for the product still reading the register).
// Wide: C 0-3 for full token tiles, 4 for the remainder; A 5, 6 for the remainder; B 7.
// GCC pastes the number into the instruction: literals only, hence the switches below.
constexpr int kRemainderC = 4, kRemainderA = 6;

// Palette 1, every tile 16 rows of 64 bytes, except (wide) the remainder's C and A tiles, which
// have `remainder` rows. The narrow way reads whole 16-token A tiles: A8Batch keeps its codes
// readable to a multiple of 16 tokens, and the rows past the step's tokens are never stored.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void Configure(int remainder) {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = kTileBytes;
    c.rows[t] = kTileRows;
  }
  if (remainder > 0) c.rows[kRemainderC] = c.rows[kRemainderA] = static_cast<uint8_t>(remainder);
  _tile_loadconfig(&c);
}

void ZeroC(int c) {
  switch (c) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
  }
}

void StoreC(int c, int32_t* sums) {
  switch (c) {
    case 0: _tile_stored(0, sums, kTileBytes); break;
    case 1: _tile_stored(1, sums, kTileBytes); break;
    case 2: _tile_stored(2, sums, kTileBytes); break;
    default: _tile_stored(3, sums, kTileBytes); break;
  }
}

// B tile 6 + b_odd from 16 rows of 64 bytes.
void LoadB(int b_odd, const uint8_t* rows) {
  if (b_odd) {
    _tile_loadd(7, rows, kTileBytes);
  } else {
    _tile_loadd(6, rows, kTileBytes);
  }
}

// A tile 4 + a_odd from 16 tokens' rows at `a`, then C tile c += A x B tile 6 + b_odd.
void LoadAndMultiply(int c, int a_odd, int b_odd, const int8_t* a, int64_t stride) {
  if (a_odd) {
    _tile_loadd(5, a, stride);
  } else {
    _tile_loadd(4, a, stride);
  }
  switch (c * 4 + a_odd * 2 + b_odd) {
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

// Group g's levels for the 16 rows of `tile`, as the 64-byte rows of the group's B tiles (one
// tile of 16 rows per 64 columns). With `prefetch`, the next row tile's group is fetched while
// this one computes, as the AVX-512 kernels do: a decode batch waits on its weights.
void ExpandGroup(const W2View& w, int tile, int g, bool prefetch, uint8_t* b_rows) {
  const W2Shape& s = w.shape;
  const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, s.groups());
  const __m512i zero_bytes = _mm512_mullo_epi32(
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros + pi))), _mm512_set1_epi32(0x01010101));
  // 2q straight from the field: shifted so that code k lands on bits 1-2 of its byte (16-bit
  // shifts: no bit crosses into a byte's bits 1-2 from its neighbour), then masked with 6.
  const __m512i six = _mm512_set1_epi8(6);
  const int subs_per_group = s.group_size / kW2ColTile;
  const int64_t subs_per_tile = s.cols_padded() / kW2ColTile;
  const uint8_t* first = w.codes + (int64_t{tile} * subs_per_tile + int64_t{g} * subs_per_group) * kW2SubBlockBytes;
  for (int sb = 0; sb < subs_per_group; ++sb) {
    if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(first + (sb + subs_per_tile) * kW2SubBlockBytes), _MM_HINT_T1);
    const __m512i v = _mm512_loadu_si512(first + sb * kW2SubBlockBytes);
    const __m512i twice[4] = {_mm512_and_si512(_mm512_slli_epi16(v, 1), six), _mm512_and_si512(_mm512_srli_epi16(v, 1), six),
                              _mm512_and_si512(_mm512_srli_epi16(v, 3), six), _mm512_and_si512(_mm512_srli_epi16(v, 5), six)};
    for (int k = 0; k < 4; ++k) {
      _mm512_store_si512(b_rows + (4 * sb + k) * kTileBytes, _mm512_sub_epi8(twice[k], zero_bytes));
    }
  }
}

// Adds one group's sums (`rows` tokens of 16 rows each) into the float accumulators.
inline void AddGroup(int rows, __m512 scales, const int32_t* sums, float* acc) {
  for (int m = 0; m < rows; ++m) {
    float* y = acc + m * kW2RowTile;
    _mm512_store_ps(y, _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(_mm512_load_si512(sums + m * kW2RowTile)), _mm512_load_ps(y)));
  }
}

__m512 GroupScales(const W2View& w, int tile, int g) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(
      reinterpret_cast<const __m256i*>(w.scales + W2ParamIndex(tile * kW2RowTile, g, w.shape.groups()))));
}

// All `tokens` (at most 32) of one row tile, in one or two token tiles. Software pipelined by one
// group: group g's products are issued, then group g - 1's sums (stored one group earlier: a tile
// store does not forward to loads) are added, then group g's sums are stored. Every token's groups
// still reach its accumulators in order, so the results are the other paths' bit for bit.
void NarrowBlock(const W2View& w, const A8Batch& x, int tile, int tokens, float* y, int64_t ldy) {
  constexpr int kMaxTokenTiles = kNarrowMaxTokens / kTileRows;
  const W2Shape& s = w.shape;
  const int token_tiles = (tokens + kTileRows - 1) / kTileRows;
  const auto c_tile = [](int g, int t) { return (g & 1) * 2 + t; };
  alignas(64) float acc[kMaxTokenTiles * kTileRows][kW2RowTile] = {};
  // Each group's loads and the other group's stores are never a multiple of 4 KiB apart (the CPU
  // would take them for the same address and hold the loads): each token tile's two sets of sums
  // side by side, and the two sets of B rows side by side at the group's size.
  alignas(64) int32_t sums[kMaxTokenTiles][2][kTileRows][kW2RowTile];
  alignas(64) uint8_t b_rows[2 * kMaxGroupSize / 4][kTileBytes];
  const int b_set_rows = s.group_size / 4;
  const int64_t stride = x.cols_padded();
  __m512 previous_scales = _mm512_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    const int set = g & 1;
    ExpandGroup(w, tile, g, /*prefetch=*/true, b_rows[set * b_set_rows]);
    for (int t = 0; t < token_tiles; ++t) ZeroC(c_tile(g, t));
    for (int kk = 0; kk < s.group_size / kTileBytes; ++kk) {
      LoadB(kk & 1, b_rows[set * b_set_rows + kTileRows * kk]);
      const int col = g * s.group_size + kk * kTileBytes;
      for (int t = 0; t < token_tiles; ++t) {
        LoadAndMultiply(c_tile(g, t), t & 1, kk & 1, x.codes(kTileRows * t) + col, stride);
      }
    }
    if (g > 0) {
      for (int t = 0; t < token_tiles; ++t) AddGroup(kTileRows, previous_scales, &sums[t][set ^ 1][0][0], acc[kTileRows * t]);
    }
    for (int t = 0; t < token_tiles; ++t) StoreC(c_tile(g, t), &sums[t][set][0][0]);
    previous_scales = GroupScales(w, tile, g);
  }
  const int last = (s.groups() - 1) & 1;
  for (int t = 0; t < token_tiles; ++t) AddGroup(kTileRows, previous_scales, &sums[t][last][0][0], acc[kTileRows * t]);
  const int valid = std::min(kW2RowTile, s.rows - tile * kW2RowTile);
  const __mmask16 mask = valid >= 16 ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
  for (int m = 0; m < tokens; ++m) {
    _mm512_mask_storeu_ps(y + m * ldy + tile * kW2RowTile, mask, _mm512_mul_ps(_mm512_load_ps(acc[m]), _mm512_set1_ps(x.scale(m))));
  }
}

// Tokens [t0, t0 + 16 * full + remainder) of one row tile (full <= 4): each group expanded once
// for all of them.
void WideBlock(const W2View& w, const A8Batch& x, int tile, int t0, int full, int remainder, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  const int tokens = kTileRows * full + remainder;
  alignas(64) float acc[kTileRows * (kWideTokenTiles + 1)][kW2RowTile] = {};
  alignas(64) int32_t sums[kTileRows][kW2RowTile];
  alignas(64) uint8_t b_rows[kMaxGroupSize / 4][kTileBytes];
  const int64_t stride = x.cols_padded();
  for (int g = 0; g < s.groups(); ++g) {
    ExpandGroup(w, tile, g, /*prefetch=*/false, &b_rows[0][0]);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_zero(4);
    for (int kk = 0; kk < s.group_size / kTileBytes; ++kk) {
      _tile_loadd(7, b_rows[kTileRows * kk], kTileBytes);
      const int col = g * s.group_size + kk * kTileBytes;
      const auto a = [&](int c) { return x.codes(t0 + kTileRows * c) + col; };
      if (full > 0) { _tile_loadd(5, a(0), stride); _tile_dpbssd(0, 5, 7); }
      if (full > 1) { _tile_loadd(5, a(1), stride); _tile_dpbssd(1, 5, 7); }
      if (full > 2) { _tile_loadd(5, a(2), stride); _tile_dpbssd(2, 5, 7); }
      if (full > 3) { _tile_loadd(5, a(3), stride); _tile_dpbssd(3, 5, 7); }
      if (remainder > 0) { _tile_loadd(6, a(full), stride); _tile_dpbssd(4, 6, 7); }
    }
    const __m512 scales = GroupScales(w, tile, g);
    for (int c = 0; c < full; ++c) {
      StoreC(c, &sums[0][0]);
      AddGroup(kTileRows, scales, &sums[0][0], acc[kTileRows * c]);
    }
    if (remainder > 0) {
      _tile_stored(4, &sums[0][0], kTileBytes);
      AddGroup(remainder, scales, &sums[0][0], acc[kTileRows * full]);
    }
  }
  const int valid = std::min(kW2RowTile, s.rows - tile * kW2RowTile);
  const __mmask16 mask = valid >= 16 ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
  for (int m = 0; m < tokens; ++m) {
    _mm512_mask_storeu_ps(y + (t0 + m) * ldy + tile * kW2RowTile, mask,
                          _mm512_mul_ps(_mm512_load_ps(acc[m]), _mm512_set1_ps(x.scale(t0 + m))));
  }
}

}  // namespace

// The table (kAmxKernels) is in kernels_avx512.cc: a constant aggregate, so that no code of this
// file runs before the dispatcher has checked the CPU.
void MatMulW2A8Amx(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  // 2:4 layers, steps too small to fill a tile, and group sizes below a B tile or above the
  // buffers stay on AVX-512.
  if (w.shape.sparse24 || x.tokens() < kTileRows || w.shape.group_size % kTileBytes != 0 ||
      w.shape.group_size > kMaxGroupSize) {
    kAvx512Kernels.matmul_w2a8(w, x, tile_begin, tile_end, y, ldy);
    return;
  }
  const int n = x.tokens();
  if (n <= kNarrowMaxTokens) {
    Configure(0);
    for (int tile = tile_begin; tile < tile_end; ++tile) NarrowBlock(w, x, tile, n, y, ldy);
  } else {
    constexpr int kBlock = kTileRows * kWideTokenTiles;
    const int blocks = n / kBlock;
    const int rest = n - blocks * kBlock;
    Configure(rest % kTileRows);
    for (int tile = tile_begin; tile < tile_end; ++tile) {
      for (int b = 0; b < blocks; ++b) WideBlock(w, x, tile, b * kBlock, kWideTokenTiles, 0, y, ldy);
      if (rest > 0) WideBlock(w, x, tile, blocks * kBlock, rest / kTileRows, rest % kTileRows, y, ldy);
    }
  }
  _tile_release();
}

}  // namespace accllm
