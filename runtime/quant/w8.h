// W8: 8-bit weights, symmetric, with one fp32 scale per row and group of input columns:
//
//   w = scale * q,   q in [-127, 127]
//
// for a layer served above 2 bits but read by the integer kernels (the classifier, quantized
// when an engine loads it; it is not a file format). The layout feeds the same dot-product step
// as W2's (runtime/quant/w2.h):
//
//   * rows are padded to a multiple of 16, columns to a multiple of the group size (padding 0).
//   * a sub-block holds 16 rows x 4 columns in 64 bytes: byte 4r + b is row r, column 4k + b, so
//     one 512-bit load meets 4 activation bytes in every row lane; sub-blocks run column by
//     column within a row tile, row tile by row tile.
//   * scales (fp32) and sums (int32, the sum of a group's codes, with which kernels that bias the
//     activations to unsigned take the bias off) are [row_tile][group][16].
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/quant/w2.h"

namespace accllm {

struct W8Shape {
  int rows = 0;
  int cols = 0;
  int group_size = 128;

  int rows_padded() const { return (rows + kW2RowTile - 1) / kW2RowTile * kW2RowTile; }
  int cols_padded() const { return (cols + group_size - 1) / group_size * group_size; }
  int row_tiles() const { return rows_padded() / kW2RowTile; }
  int groups() const { return cols_padded() / group_size; }
};

struct W8View {
  W8Shape shape;
  const int8_t* codes = nullptr;   // rows_padded x cols_padded, tiled
  const float* scales = nullptr;   // [row_tile][group][16]
  const int32_t* sums = nullptr;   // [row_tile][group][16]
};

struct W8Matrix {
  W8Shape shape;
  std::vector<int8_t> codes;
  std::vector<float> scales;
  std::vector<int32_t> sums;

  explicit W8Matrix(const W8Shape& shape);
  W8View view() const { return {shape, codes.data(), scales.data(), sums.data()}; }
};

// Byte offset of (row, col) in the tiled codes.
inline int64_t W8CodeIndex(const W8Shape& s, int row, int col) {
  const int64_t sub_block = int64_t{row / kW2RowTile} * (s.cols_padded() / 4) + col / 4;
  return sub_block * 64 + (row % kW2RowTile) * 4 + col % 4;
}

// Round-to-nearest of a row-major fp16 matrix (rows x cols), scale = max |w| / 127 per group.
// Group sizes: a power of two in [32, 1024].
absl::StatusOr<W8Matrix> QuantizeW8(std::span<const uint16_t> f16, const W8Shape& shape);

// Row `row` as floats (scale * q), cols values.
void DequantizeW8Row(const W8View& w, int row, std::span<float> out);

}  // namespace accllm
