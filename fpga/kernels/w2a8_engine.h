// The reconfigurable W2A8 engine: matrix-vector for decode (tokens = 1) and matrix-matrix for
// prefill and batched decode (tokens > 1) over 2-bit weights, dense or 2:4 sparse, and int8
// activations. It reads the packed model format as it is (runtime/quant/w2.h): each 64-byte
// sub-block (16 rows x 16 columns) is one 512-bit HBM beat.
//
// One call carries up to kW2A8TokenLanes tokens (T, a build parameter: 4 or 8). Their activations
// and group sums are read into on-chip buffers once per call, a beat per cycle; then each row tile
// streams from HBM, a group at a time (its 16 scales and 16 zeros, then its sub-blocks, one beat
// per cycle), and each sub-block (one weight beat) meets all T tokens at once, in T copies of a
// 16-lane x 16-column array of 2x8-bit MACs. So a call reads each weight once from HBM, and a step
// of n tokens reads the weights ceil(n / T) times (the host splits it into calls). Its cycles are
// counted in C simulation (fpga/kernels/cycle_count.h). Results equal the CPU kernels' bit for bit:
//   y[t][r] = a_scale[t] * Y,  Y = fma(scale[r][g], float(2 dot[r][g] - zero[r][g] * asum[t][g]), Y)
#pragma once

#include <cstdint>

#include "fpga/kernels/hls_compat.h"

namespace accllm::hls {

// A call's activations and group sums staged on chip: input columns (every one, 2:4 or not) and groups.
inline constexpr int kW2MaxCols = 16384;
inline constexpr int kW2MaxGroups = 512;

#ifndef ACCLLM_W2A8_TOKEN_LANES
#define ACCLLM_W2A8_TOKEN_LANES 4
#endif
// Tokens one call carries, each weight beat used for all of them (T).
inline constexpr int kW2A8TokenLanes = ACCLLM_W2A8_TOKEN_LANES;
static_assert(kW2A8TokenLanes == 4 || kW2A8TokenLanes == 8, "the engine is built with 4 or 8 token lanes");

// The engine with T token lanes (instantiated for 4 and 8); the compute unit (w2a8_unit.h) runs
// the build's.
template <int T>
void W2A8Engine(const Beat* codes, const Beat* sparse_index, const uint16_t* scales, const uint8_t* zeros,
                const int8_t* activations, const int32_t* group_sums, const float* act_scales, float* out, int rows,
                int cols_padded, int group_size, int sparse24, int tokens, int ldy, int tile_begin, int tile_end);

}  // namespace accllm::hls
