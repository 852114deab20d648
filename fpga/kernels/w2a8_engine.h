// The reconfigurable W2A8 engine: matrix-vector for decode (tokens = 1) and matrix-matrix for
// prefill and batched decode (tokens > 1) over 2-bit weights, dense or 2:4 sparse, and int8
// activations. It reads the packed model format as it is (runtime/quant/w2.h): each 64-byte
// sub-block (16 rows x 16 columns) is one 512-bit HBM beat.
//
// Per row tile the engine loads the tile's sub-blocks into on-chip memory once and streams every
// token through a 16-lane x 16-column array of 2x8-bit MACs, so weights are read from HBM once per
// step however many tokens there are. Results equal the CPU kernels' bit for bit:
//   y[t][r] = a_scale[t] * Y,  Y = fma(scale[r][g], float(dot[r][g] - zero[r][g] * asum[t][g]), Y)
#pragma once

#include <cstdint>

#include "fpga/kernels/hls_compat.h"

namespace accllm::hls {

inline constexpr int kW2MaxSubBlocksPerTile = 1024;  // stored columns up to 16384
inline constexpr int kW2MaxGroups = 512;

struct W2A8Args {
  const Beat* codes;            // [row_tiles][stored_cols / 16] beats
  const Beat* sparse_index;     // same layout; 2-bit positions within each group of 4 (2:4 only)
  const uint16_t* scales;       // fp16 [row_tiles][groups][16]
  const uint8_t* zeros;         // [row_tiles][groups][16]
  const int8_t* activations;    // [tokens][cols_padded]
  const int32_t* group_sums;    // [tokens][groups]: sum of each group's activation codes
  const float* act_scales;      // [tokens]
  float* out;                   // [tokens][ldy]
  int rows, cols_padded, group_size, sparse24, tokens, ldy, tile_begin, tile_end;
};

}  // namespace accllm::hls

// The top function (one compute unit). Scalars arrive over AXI-Lite, pointers over AXI masters.
extern "C" void accllm_w2a8(const accllm::hls::Beat* codes, const accllm::hls::Beat* sparse_index,
                            const uint16_t* scales, const uint8_t* zeros, const int8_t* activations,
                            const int32_t* group_sums, const float* act_scales, float* out, int rows,
                            int cols_padded, int group_size, int sparse24, int tokens, int ldy, int tile_begin,
                            int tile_end);
