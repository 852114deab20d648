#include "fpga/kernels/w8a8_engine.h"

#include <algorithm>
#include <cmath>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/unit_io.h"
#include "fpga/kernels/w2a8_engine.h"

namespace accllm::hls {
namespace {

constexpr int kLanes = 16;   // rows per tile: one output row per lane
constexpr int kColumns = 4;  // columns per sub-block

}  // namespace

template <int T>
void W8A8Engine(const Beat* codes, const float* scales, const int8_t* activations, const float* act_scales, float* out,
                int rows, int cols_padded, int group_size, int tokens, int ldy, int tile_begin, int tile_end) {
#pragma HLS INLINE
  const int groups = cols_padded / group_size;
  const int sub_blocks = cols_padded / kColumns;
  const int sub_blocks_per_group = group_size / kColumns;
#ifndef ACCLLM_VITIS_HLS
  if (tokens < 1 || tokens > T) __builtin_trap();  // calls of at most T tokens
#endif
  CycleTally tally;
  // The call's tokens on chip, a beat (64 codes) per cycle, as the W2 mode stages them.
  int8_t act[T][kW2MaxCols];
  float act_scale[T];
#pragma HLS ARRAY_PARTITION variable = act dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = act dim = 2 cyclic factor = 64
#pragma HLS ARRAY_PARTITION variable = act_scale complete
  for (int t = 0; t < tokens; ++t) {
    const int beats = StageActivationCodes(activations + static_cast<int64_t>(t) * cols_padded, cols_padded, act[t]);
    act_scale[t] = act_scales[t];
    tally.Add(beats + 1);
  }
  tally.Add(kLoopDepth);

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    float acc[T][kLanes];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
    for (int t = 0; t < T; ++t) {
#pragma HLS UNROLL
      for (int r = 0; r < kLanes; ++r) acc[t][r] = 0.0f;
    }
    for (int g = 0; g < groups; ++g) {
      float scale[kLanes];  // one beat
#pragma HLS ARRAY_PARTITION variable = scale complete
      for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
        scale[r] = scales[(static_cast<int64_t>(tile) * groups + g) * kLanes + r];
      }
      int32_t dot[T][kLanes] = {};
#pragma HLS ARRAY_PARTITION variable = dot complete dim = 0
      for (int s = g * sub_blocks_per_group; s < (g + 1) * sub_blocks_per_group; ++s) {
#pragma HLS PIPELINE II = 1
        const Beat w = codes[static_cast<int64_t>(tile) * sub_blocks + s];
        for (int t = 0; t < T; ++t) {
#pragma HLS UNROLL
          for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
            for (int c = 0; c < kColumns; ++c) {
#pragma HLS UNROLL
              if (t < tokens) {
                const int32_t q = static_cast<int8_t>(BeatByte(w, kColumns * r + c));
                dot[t][r] += q * act[t][kColumns * s + c];
              }
            }
          }
        }
      }
      for (int t = 0; t < T; ++t) {
#pragma HLS UNROLL
        for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
          acc[t][r] = std::fma(scale[r], static_cast<float>(dot[t][r]), acc[t][r]);
        }
      }
      tally.Add(std::max(1 + sub_blocks_per_group, kFmaLatency));
    }
    StoreTileOutputs<T>(acc, act_scale, tokens, tile, rows, out, ldy, tally);
  }
  tally.Commit(CycleUnit::kClassifier);
}

template void W8A8Engine<4>(const Beat*, const float*, const int8_t*, const float*, float*, int, int, int, int, int, int,
                            int);
template void W8A8Engine<8>(const Beat*, const float*, const int8_t*, const float*, float*, int, int, int, int, int, int,
                            int);

}  // namespace accllm::hls
