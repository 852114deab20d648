// How a W2 tensor is split over the W2A8 compute units: contiguous runs of row tiles, one per
// unit, each uploaded to that unit's HBM bank as its own buffers. The unit then sees a tensor of
// `rows` rows starting at tile 0, and its outputs land at rows [row0, row0 + rows) of the layer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/quant/w2.h"

namespace accllm::fpga {

struct Stripe {
  int unit;
  int tile_begin, tile_end;    // row tiles of the layer
  int row0, rows;              // output rows of the layer (the last stripe may be ragged)
  int64_t code_offset, code_bytes;    // into codes (and the 2:4 index): bytes
  int64_t param_offset, param_count;  // into scales and zeros: elements
};

inline std::vector<Stripe> PlanStripes(const W2Shape& s, int units) {
  const int tiles = s.row_tiles();
  const int n = std::max(1, std::min(units, tiles));
  const int64_t tile_code_bytes = s.code_bytes() / tiles;
  const int64_t tile_params = int64_t{s.groups()} * kW2RowTile;
  std::vector<Stripe> plan;
  for (int u = 0; u < n; ++u) {
    Stripe st;
    st.unit = u;
    st.tile_begin = static_cast<int>(int64_t{tiles} * u / n);
    st.tile_end = static_cast<int>(int64_t{tiles} * (u + 1) / n);
    st.row0 = st.tile_begin * kW2RowTile;
    st.rows = std::min(s.rows, st.tile_end * kW2RowTile) - st.row0;
    st.code_offset = st.tile_begin * tile_code_bytes;
    st.code_bytes = (st.tile_end - st.tile_begin) * tile_code_bytes;
    st.param_offset = st.tile_begin * tile_params;
    st.param_count = (st.tile_end - st.tile_begin) * tile_params;
    plan.push_back(st);
  }
  return plan;
}

}  // namespace accllm::fpga
