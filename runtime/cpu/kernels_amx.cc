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

constexpr int kTileRows = 16;            // tokens per A/C tile
constexpr int kTileBytes = 64;           // bytes per tile row (K = 64 activation bytes)
constexpr int kMaxTokenTiles = 4;        // C tiles 0-3: up to 64 tokens share each B tile
// Tile registers (GCC's tile intrinsics paste the number into the instruction: literals only):
// 0-3 C for full token tiles, 4 C for the remainder, 5 A, 6 A for the remainder, 7 B.
constexpr int kRemainderC = 4, kRemainderA = 6;

// The tile configuration (palette 1): C tiles 0-3 and A tile 5 are 16 rows; the remainder's C
// (4) and A (6) tiles have `remainder` rows; B (7) is 16 rows of 64 bytes.
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
  c.rows[kRemainderC] = c.rows[kRemainderA] = static_cast<uint8_t>(std::max(remainder, 1));
  _tile_loadconfig(&c);
}

// Group g's levels for the 16 rows of `tile`, as the 64-byte rows of the group's B tiles (one
// tile of 16 rows per 64 columns).
void ExpandGroup(const W2View& w, int tile, int g, uint8_t* b_rows) {
  const W2Shape& s = w.shape;
  const int64_t pi = W2ParamIndex(tile * kW2RowTile, g, s.groups());
  const __m512i zero_bytes = _mm512_mullo_epi32(
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.zeros + pi))), _mm512_set1_epi32(0x01010101));
  // 2q straight from the field: shifted so that code k lands on bits 1-2 of its byte (16-bit
  // shifts: no bit crosses into a byte's bits 1-2 from its neighbour), then masked with 6.
  const __m512i six = _mm512_set1_epi8(6);
  const int subs_per_group = s.group_size / kW2ColTile;
  const uint8_t* first = w.codes + (int64_t{tile} * (s.cols_padded() / kW2ColTile) + int64_t{g} * subs_per_group) * kW2SubBlockBytes;
  for (int sb = 0; sb < subs_per_group; ++sb) {
    const __m512i v = _mm512_loadu_si512(first + sb * kW2SubBlockBytes);
    const __m512i twice[4] = {_mm512_and_si512(_mm512_slli_epi16(v, 1), six), _mm512_and_si512(_mm512_srli_epi16(v, 1), six),
                              _mm512_and_si512(_mm512_srli_epi16(v, 3), six), _mm512_and_si512(_mm512_srli_epi16(v, 5), six)};
    for (int k = 0; k < 4; ++k) {
      _mm512_store_si512(b_rows + (4 * sb + k) * kTileBytes, _mm512_sub_epi8(twice[k], zero_bytes));
    }
  }
}

// Adds one group's sums (tile `c`, `rows` tokens) into the float accumulators.
inline void Epilogue(int c, int rows, __m512 scales, int32_t* sums, float* acc) {
  switch (c) {  // the tile number must be a constant
    case 0: _tile_stored(0, sums, kTileBytes); break;
    case 1: _tile_stored(1, sums, kTileBytes); break;
    case 2: _tile_stored(2, sums, kTileBytes); break;
    case 3: _tile_stored(3, sums, kTileBytes); break;
    default: _tile_stored(4, sums, kTileBytes); break;
  }
  for (int m = 0; m < rows; ++m) {
    float* y = acc + m * kW2RowTile;
    _mm512_store_ps(y, _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(_mm512_load_si512(sums + m * kW2RowTile)), _mm512_load_ps(y)));
  }
}

// Tokens [t0, t0 + 16 * full + remainder) of one row tile.
void TokenBlock(const W2View& w, const A8Batch& x, int tile, int t0, int full, int remainder, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  const int tokens = kTileRows * full + remainder;
  alignas(64) float acc[kTileRows * (kMaxTokenTiles + 1)][kW2RowTile] = {};
  alignas(64) int32_t sums[kTileRows][kW2RowTile];
  alignas(64) uint8_t b_rows[1024 / 4][kTileBytes];  // group / 4 rows: up to group 1024
  const int64_t stride = x.cols_padded();
  for (int g = 0; g < s.groups(); ++g) {
    ExpandGroup(w, tile, g, &b_rows[0][0]);
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
    const __m512 scales = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + W2ParamIndex(tile * kW2RowTile, g, s.groups()))));
    for (int c = 0; c < full; ++c) Epilogue(c, kTileRows, scales, &sums[0][0], acc[kTileRows * c]);
    if (remainder > 0) Epilogue(kRemainderC, remainder, scales, &sums[0][0], acc[kTileRows * full]);
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
  // 2:4 layers, steps too small to fill a tile, and group sizes below a B tile stay on AVX-512.
  if (w.shape.sparse24 || x.tokens() < kTileRows || w.shape.group_size % kTileBytes != 0) {
    kAvx512Kernels.matmul_w2a8(w, x, tile_begin, tile_end, y, ldy);
    return;
  }
  const int n = x.tokens();
  const int blocks = n / (kTileRows * kMaxTokenTiles);
  const int rest = n - blocks * kTileRows * kMaxTokenTiles;
  Configure(rest % kTileRows);
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    for (int b = 0; b < blocks; ++b) TokenBlock(w, x, tile, b * kTileRows * kMaxTokenTiles, kMaxTokenTiles, 0, y, ldy);
    if (rest > 0) TokenBlock(w, x, tile, blocks * kTileRows * kMaxTokenTiles, rest / kTileRows, rest % kTileRows, y, ldy);
  }
  _tile_release();
}

}  // namespace accllm
