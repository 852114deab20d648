// The W2A8 units' 8-bit mode, for the classifier: 8-bit weights (runtime/quant/w8.h: sub-blocks
// of 16 rows x 4 columns, 64 bytes, one HBM beat; a float scale per row and group) against int8
// activations. The same unit, weight channel and staged activations as the W2 mode: each weight
// beat meets the call's T tokens in 16 x 4 8-bit MACs per token lane (the DSPs the W2 mode packs
// 2x8-bit products into take two 8x8 products instead). Per row tile and group: the group's
// scales (one beat), then its sub-blocks a beat per cycle; the group's dot products fold into the
// accumulators by an fma. Results equal the CPU's W8A8 kernels bit for bit:
//   y[t][r] = a_scale[t] * Y,  Y = fma(scale[r][g], float(dot[r][g]), Y)
#pragma once

#include <cstdint>

#include "fpga/kernels/hls_compat.h"

namespace accllm::hls {

template <int T>
void W8A8Engine(const Beat* codes, const float* scales, const int8_t* activations, const float* act_scales, float* out,
                int rows, int cols_padded, int group_size, int tokens, int ldy, int tile_begin, int tile_end);

}  // namespace accllm::hls
