#include "bench/peak_loops.h"

#include <immintrin.h>

#include "runtime/cpu/amx_tile_config.h"

namespace accllm {

int32_t AmxTilePeakLoop(int64_t rounds) {
  ConfigureFullTiles();
  alignas(64) int8_t operands[16][64];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 64; ++j) operands[i][j] = static_cast<int8_t>(i - j);
  }
  _tile_loadd(4, operands, 64);
  _tile_loadd(5, operands, 64);
  _tile_loadd(6, operands, 64);
  _tile_loadd(7, operands, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t r = 0; r < rounds; ++r) {
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  }
  alignas(64) int32_t sums[4][16][16];
  _tile_stored(0, sums[0], 64);
  _tile_stored(1, sums[1], 64);
  _tile_stored(2, sums[2], 64);
  _tile_stored(3, sums[3], 64);
  _tile_release();
  return sums[0][1][2] ^ sums[1][3][4] ^ sums[2][5][6] ^ sums[3][7][8];
}

int32_t VnniPeakLoop(int64_t rounds) {
  __m512i acc[12];
  for (__m512i& a : acc) a = _mm512_setzero_si512();
  const __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-5);
  for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (__m512i& a : acc) a = _mm512_dpbusd_epi32(a, x, y);
  }
  int32_t s = 0;
  for (const __m512i& a : acc) s ^= _mm512_reduce_add_epi32(a);
  return s;
}

}  // namespace accllm
