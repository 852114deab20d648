#include "fpga/kernels/w2a8_engine.h"

#include <cmath>

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
}  // namespace accllm::hls

extern "C" void accllm_w2a8(const accllm::hls::Beat* codes, const accllm::hls::Beat* sparse_index,
                            const uint16_t* scales, const uint8_t* zeros, const int8_t* activations,
                            const int32_t* group_sums, const float* act_scales, float* out, int rows,
                            int cols_padded, int group_size, int sparse24, int tokens, int ldy, int tile_begin,
                            int tile_end) {
#pragma HLS INTERFACE m_axi port = codes offset = slave bundle = gmem0 max_read_burst_length = 64
#pragma HLS INTERFACE m_axi port = sparse_index offset = slave bundle = gmem1 max_read_burst_length = 64
#pragma HLS INTERFACE m_axi port = scales offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = zeros offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = activations offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = group_sums offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = act_scales offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = out offset = slave bundle = gmem4
#pragma HLS INTERFACE s_axilite port = return
  using namespace accllm::hls;
  const bool sparse = sparse24 != 0;
  const int stored_cols = sparse ? cols_padded / 2 : cols_padded;
  const int stored_group = sparse ? group_size / 2 : group_size;
  const int sub_blocks = stored_cols / kColumns;
  const int groups = cols_padded / group_size;
  const int sub_blocks_per_group = stored_group / kColumns;

  // On-chip copies of one row tile (URAM/BRAM in hardware).
  Beat tile_codes[kW2MaxSubBlocksPerTile];
  Beat tile_index[kW2MaxSubBlocksPerTile];
  float tile_scales[kW2MaxGroups][kLanes];
  uint8_t tile_zeros[kW2MaxGroups][kLanes];
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    // Load the tile once (burst reads from its HBM channel)...
    for (int s = 0; s < sub_blocks; ++s) {
#pragma HLS PIPELINE II = 1
      tile_codes[s] = codes[static_cast<int64_t>(tile) * sub_blocks + s];
      if (sparse) tile_index[s] = sparse_index[static_cast<int64_t>(tile) * sub_blocks + s];
    }
    for (int g = 0; g < groups; ++g) {
      for (int r = 0; r < kLanes; ++r) {
#pragma HLS PIPELINE II = 1
        const int64_t p = (static_cast<int64_t>(tile) * groups + g) * kLanes + r;
        tile_scales[g][r] = HalfToFloat(scales[p]);
        tile_zeros[g][r] = zeros[p];
      }
    }
    // ...then stream every token through the MAC array.
    for (int t = 0; t < tokens; ++t) {
      const int8_t* a = activations + static_cast<int64_t>(t) * cols_padded;
      float acc[kLanes] = {};
      for (int g = 0; g < groups; ++g) {
        int32_t dot[kLanes] = {}, kept_sum[kLanes] = {};
        for (int s = g * sub_blocks_per_group; s < (g + 1) * sub_blocks_per_group; ++s) {
#pragma HLS PIPELINE II = 1
          MacSubBlock(tile_codes[s], &tile_index[s], a, s * kColumns, sparse, dot, kept_sum);
        }
        for (int r = 0; r < kLanes; ++r) {
#pragma HLS UNROLL
          const int32_t a_sum = sparse ? kept_sum[r] : group_sums[static_cast<int64_t>(t) * groups + g];
          const int32_t integer = dot[r] - static_cast<int32_t>(tile_zeros[g][r]) * a_sum;
          acc[r] = std::fma(tile_scales[g][r], static_cast<float>(integer), acc[r]);
        }
      }
      for (int r = 0; r < kLanes; ++r) {
#pragma HLS PIPELINE II = 1
        const int row = tile * kLanes + r;
        if (row < rows) out[static_cast<int64_t>(t) * ldy + row] = acc[r] * act_scales[t];
      }
    }
  }
}
