#include "fpga/kernels/w2a8_engine.h"

#include <algorithm>
#include <cmath>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/unit_io.h"

namespace accllm::hls {
namespace {

constexpr int kLanes = 16;    // rows per tile: one output row per lane
constexpr int kColumns = 16;  // columns per sub-block

// One sub-block against 16 activations: lane r's dot product and the activations it used.
// Code byte 4r + b holds, in bits [2k, 2k + 2), the code of (row r, column 4k + b).
void MacSubBlock(const Beat& w, const Beat* index, const int8_t* a, int sub_block_col, bool sparse,
                 int32_t dot[kLanes], int32_t kept_sum[kLanes]) {
#pragma HLS INLINE
  for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
    for (int c = 0; c < kColumns; ++c) {
#pragma HLS UNROLL
      const int byte = 4 * r + c % 4, shift = 2 * (c / 4);
      const int32_t q = (BeatByte(w, byte) >> shift) & 3;
      if (sparse) {
        // Stored column s keeps one weight of the 4 original columns 4 * (s / 2) + position.
        const int stored = sub_block_col + c;
        const int position = (BeatByte(*index, byte) >> shift) & 3;
        const int32_t v = a[4 * (stored / 2) + position];
        dot[r] += q * v;
        kept_sum[r] += v;
      } else {
        dot[r] += q * a[sub_block_col + c];
      }
    }
  }
}

}  // namespace

template <int T>
void W2A8Engine(const Beat* codes, const Beat* sparse_index, const uint16_t* scales, const uint8_t* zeros,
                const int8_t* activations, const int32_t* group_sums, const float* act_scales, float* out, int rows,
                int cols_padded, int group_size, int sparse24, int tokens, int ldy, int tile_begin, int tile_end) {
#pragma HLS INLINE
  const bool sparse = sparse24 != 0;
  const int stored_cols = sparse ? cols_padded / 2 : cols_padded;
  const int stored_group = sparse ? group_size / 2 : group_size;
  const int sub_blocks = stored_cols / kColumns;
  const int groups = cols_padded / group_size;
  const int sub_blocks_per_group = stored_group / kColumns;
#ifndef ACCLLM_VITIS_HLS
  if (tokens < 1 || tokens > T) __builtin_trap();  // the host splits steps into calls of at most T tokens
#endif

  CycleTally tally;
  // The call's tokens, on chip once (BRAM): every weight beat below meets all of them. Read a beat
  // per cycle: 64 activation codes, or 16 group sums.
  int8_t act[T][kW2MaxCols];
  int32_t act_group_sums[T][kW2MaxGroups];
  float act_scale[T];
#pragma HLS ARRAY_PARTITION variable = act dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = act dim = 2 cyclic factor = 64
#pragma HLS ARRAY_PARTITION variable = act_group_sums dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = act_group_sums dim = 2 cyclic factor = 16
#pragma HLS ARRAY_PARTITION variable = act_scale complete
  const int act_beats = (cols_padded + 63) / 64, sum_beats = (groups + 15) / 16;
  for (int t = 0; t < tokens; ++t) {
    StageActivationCodes(activations + static_cast<int64_t>(t) * cols_padded, cols_padded, act[t]);
    for (int b = 0; b < sum_beats; ++b) {
#pragma HLS PIPELINE II = 1
      for (int k = 0; k < 16; ++k) {
#pragma HLS UNROLL
        const int g = 16 * b + k;
        if (g < groups) act_group_sums[t][g] = group_sums[static_cast<int64_t>(t) * groups + g];
      }
    }
    act_scale[t] = act_scales[t];
    tally.Add(act_beats + sum_beats + 1);
  }
  tally.Add(kLoopDepth);

  // Each row tile streams from the unit's own channel: per group its 16 scales and 16 zeros (one
  // read each), then its sub-blocks, a beat per cycle (2:4: the positions beat too, on the same
  // master), each meeting all T tokens at once; the group's sums fold into the accumulators (an
  // fma carried from group to group: a group takes at least its latency).
  const int beat_interval = sparse ? 2 : 1;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    float acc[T][kLanes];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
    for (int t = 0; t < T; ++t) {
#pragma HLS UNROLL
      for (int r = 0; r < kLanes; ++r) acc[t][r] = 0.0f;
    }
    for (int g = 0; g < groups; ++g) {
      float scale[kLanes];
      uint8_t zero[kLanes];
#pragma HLS ARRAY_PARTITION variable = scale complete
#pragma HLS ARRAY_PARTITION variable = zero complete
      for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
        const int64_t p = (static_cast<int64_t>(tile) * groups + g) * kLanes + r;
        scale[r] = HalfToFloat(scales[p]);
        zero[r] = zeros[p];
      }
      int32_t dot[T][kLanes] = {}, kept_sum[T][kLanes] = {};
#pragma HLS ARRAY_PARTITION variable = dot complete dim = 0
#pragma HLS ARRAY_PARTITION variable = kept_sum complete dim = 0
      for (int s = g * sub_blocks_per_group; s < (g + 1) * sub_blocks_per_group; ++s) {
#pragma HLS PIPELINE II = 1
        const int64_t beat = static_cast<int64_t>(tile) * sub_blocks + s;
        const Beat w = codes[beat];
        Beat index{};
        if (sparse) index = sparse_index[beat];
        for (int t = 0; t < T; ++t) {
#pragma HLS UNROLL
          if (t < tokens) MacSubBlock(w, &index, act[t], s * kColumns, sparse, dot[t], kept_sum[t]);
        }
      }
      for (int t = 0; t < T; ++t) {
#pragma HLS UNROLL
        for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
          // Lanes past `tokens` hold no activations; their sums are never staged.
          const int32_t a_sum = t >= tokens ? 0 : sparse ? kept_sum[t][r] : act_group_sums[t][g];
          const int32_t integer = 2 * dot[t][r] - static_cast<int32_t>(zero[r]) * a_sum;  // see W2Level
          acc[t][r] = std::fma(scale[r], static_cast<float>(integer), acc[t][r]);
        }
      }
      tally.Add(std::max(2 + sub_blocks_per_group * beat_interval, kFmaLatency));
    }
    StoreTileOutputs<T>(acc, act_scale, tokens, tile, rows, out, ldy, tally);
  }
  tally.Commit(CycleUnit::kW2A8);
}

template void W2A8Engine<4>(const Beat*, const Beat*, const uint16_t*, const uint8_t*, const int8_t*, const int32_t*,
                            const float*, float*, int, int, int, int, int, int, int, int);
template void W2A8Engine<8>(const Beat*, const Beat*, const uint16_t*, const uint8_t*, const int8_t*, const int32_t*,
                            const float*, float*, int, int, int, int, int, int, int, int);

}  // namespace accllm::hls
