// What the W2A8 units' two modes (w2a8_engine.cc, w8a8_engine.cc) share: staging a token's
// activation codes on chip, and writing a row tile's outputs, a token's 16 rows per beat.
#pragma once

#include <cstdint>

#include "fpga/kernels/cycle_count.h"

namespace accllm::hls {

// A token's cols_padded activation codes into `act`, a beat (64 codes) per cycle; the beats read.
inline int StageActivationCodes(const int8_t* activations, int cols_padded, int8_t* act) {
#pragma HLS INLINE
  const int beats = (cols_padded + 63) / 64;
  for (int b = 0; b < beats; ++b) {
#pragma HLS PIPELINE II = 1
    for (int k = 0; k < 64; ++k) {
#pragma HLS UNROLL
      const int j = 64 * b + k;
      if (j < cols_padded) act[j] = activations[j];
    }
  }
  return beats;
}

// out[t * ldy + row] = acc[t][r] * act_scale[t] for the tile's rows below `rows`: a token's 16
// outputs are one 64-byte beat.
template <int T>
void StoreTileOutputs(const float (&acc)[T][16], const float (&act_scale)[T], int tokens, int tile, int rows,
                      float* out, int ldy, CycleTally& tally) {
#pragma HLS INLINE
  for (int t = 0; t < tokens; ++t) {
#pragma HLS PIPELINE II = 1
    for (int r = 0; r < 16; ++r) {
#pragma HLS UNROLL
      const int row = tile * 16 + r;
      if (row < rows) out[static_cast<int64_t>(t) * ldy + row] = acc[t][r] * act_scale[t];
    }
  }
  tally.Add(tokens + kLoopDepth);
}

}  // namespace accllm::hls
