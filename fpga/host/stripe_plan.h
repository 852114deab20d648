// How a W2 (or W8) tensor is split over the W2A8 compute units: contiguous runs of row tiles, one per
// unit, each uploaded to that unit's HBM bank as its own buffers. The unit then sees a tensor of
// `rows` rows starting at tile 0, and its outputs land at rows [row0, row0 + rows) of the layer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fpga/kernels/w2a8_unit.h"
#include "runtime/quant/w2.h"
#include "runtime/quant/w8.h"

namespace accllm::fpga {

struct Stripe {
  int unit;
  int tile_begin, tile_end;    // row tiles of the layer
  int row0, rows;              // output rows of the layer (the last stripe may be ragged)
  int64_t code_offset, code_bytes;    // into codes (and the 2:4 index): bytes
  int64_t param_offset, param_count;  // into scales and zeros: elements
};

// The row tiles of `rows` rows, each of tile_code_bytes and tile_params, split as the units split
// them when they run (hls::StripeOfUnit): the host uploads to each unit what it will read.
inline std::vector<Stripe> PlanStripes(int rows, int64_t tile_code_bytes, int64_t tile_params, int units) {
  std::vector<Stripe> plan;
  for (int u = 0; u < units; ++u) {
    const hls::UnitStripe tiles = hls::StripeOfUnit(rows, units, u);
    if (tiles.tile_end == tiles.tile_begin) break;  // a layer of fewer tiles than units
    Stripe st;
    st.unit = u;
    st.tile_begin = tiles.tile_begin;
    st.tile_end = tiles.tile_end;
    st.row0 = st.tile_begin * kW2RowTile;
    st.rows = std::min(rows, st.tile_end * kW2RowTile) - st.row0;
    st.code_offset = st.tile_begin * tile_code_bytes;
    st.code_bytes = (st.tile_end - st.tile_begin) * tile_code_bytes;
    st.param_offset = st.tile_begin * tile_params;
    st.param_count = (st.tile_end - st.tile_begin) * tile_params;
    plan.push_back(st);
  }
  return plan;
}

inline std::vector<Stripe> PlanStripes(const W2Shape& s, int units) {
  return PlanStripes(s.rows, s.code_bytes() / s.row_tiles(), int64_t{s.groups()} * kW2RowTile, units);
}

// The 8-bit classifier over the same units (their 8-bit mode): codes and one float scale per row
// and group (`param` counts scales).
inline std::vector<Stripe> PlanStripes(const W8Shape& s, int units) {
  return PlanStripes(s.rows, int64_t{kW2RowTile} * s.cols_padded(), int64_t{s.groups()} * kW2RowTile, units);
}

}  // namespace accllm::fpga
