// W2: 2-bit weights with group-wise fp16 scales and integer zero points, optionally 2:4 sparse.
//
//   w = scale * (2q - zero),   q in {0, 1, 2, 3}, zero in {0, ..., 6}
//
// The four levels are two scales apart and the zero counts half steps, so a group's grid can sit
// symmetrically about 0 ({-3, -1, 1, 3} with zero 3) or hold 0 ({-2, 0, 2, 4} with zero 2): for
// the bell-shaped groups of a trained model the symmetric grid loses ~14% less squared error than
// any grid of whole-step zeros. Integer kernels compute 2 * (q . a) - zero * sum(a), exactly.
//
// Storage is tiled for integer dot products and identical on every device (the FPGA streams the
// same 64-byte sub-blocks as 512-bit HBM beats):
//
//   * rows are padded to a multiple of 16 (one row per 32-bit SIMD lane), columns to a multiple
//     of the group size; padding codes are 0 and padded activations are 0.
//   * a sub-block holds 16 rows x 16 columns = 256 codes in 64 bytes: byte 4r+b holds, in bits
//     [2k, 2k+2), the code of row r, column 4k+b. `(byte >> 2k) & 3` over the 64 bytes yields, for
//     every row lane, the 4 codes that meet activation bytes [4k, 4k+4): one VNNI dot product.
//   * sub-blocks are ordered row tile by row tile, and column by column within a row tile.
//   * scales (fp16) and zeros (u8) are [row_tile][group][16].
//
// 2:4 sparse tensors keep 2 of every 4 consecutive input weights. They are stored as a W2 tensor
// over the kept weights (cols/2 "compressed" columns, group_size/2 per group) plus an index
// tensor in the same tiled layout whose 2-bit fields give each kept weight's position in its
// group of 4. Either way the codes cost 2 bits per original weight.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace accllm {

inline constexpr int kW2RowTile = 16;         // rows per tile
inline constexpr int kW2ColTile = 16;         // columns per sub-block
inline constexpr int kW2SubBlockBytes = 64;   // 16 x 16 codes at 2 bits

struct W2SubBlock {
  uint8_t qs[kW2SubBlockBytes];
};
static_assert(sizeof(W2SubBlock) == kW2RowTile * kW2ColTile * 2 / 8, "wrong W2 sub-block size");

struct W2Shape {
  int rows = 0;             // output features
  int cols = 0;             // input features (original, before 2:4 compression)
  int group_size = 128;     // original columns per scale/zero group
  bool sparse24 = false;

  int rows_padded() const { return (rows + kW2RowTile - 1) / kW2RowTile * kW2RowTile; }
  int cols_padded() const { return (cols + group_size - 1) / group_size * group_size; }
  int row_tiles() const { return rows_padded() / kW2RowTile; }
  int groups() const { return cols_padded() / group_size; }
  // Columns and group size as stored (compressed for 2:4).
  int stored_cols() const { return sparse24 ? cols_padded() / 2 : cols_padded(); }
  int stored_group() const { return sparse24 ? group_size / 2 : group_size; }
  int64_t code_bytes() const { return int64_t{rows_padded()} * stored_cols() / 4; }
  int64_t group_params() const { return int64_t{rows_padded()} * groups(); }
};

// Group sizes must be a power of two in [32, 1024] (a multiple of 2 x 16 columns).
absl::Status ValidateW2Shape(const W2Shape& shape);

// A W2 tensor somewhere in memory (a mapped file, an owned matrix, device memory mirror).
struct W2View {
  W2Shape shape;
  const uint8_t* codes = nullptr;         // code_bytes()
  const uint8_t* sparse_index = nullptr;  // code_bytes() when sparse24, else null
  const uint16_t* scales = nullptr;       // group_params() fp16
  const uint8_t* zeros = nullptr;         // group_params()
};

// Owned storage for a W2 tensor.
struct W2Matrix {
  W2Shape shape;
  std::vector<uint8_t> codes;
  std::vector<uint8_t> sparse_index;
  std::vector<uint16_t> scales;
  std::vector<uint8_t> zeros;

  explicit W2Matrix(const W2Shape& shape);
  W2View view() const;
};

// Position of stored (row, stored column) in the tiled code layout: byte offset and bit shift.
struct CodeSlot {
  int64_t byte;
  int shift;
};
inline CodeSlot W2CodeSlot(const W2Shape& s, int row, int stored_col) {
  const int64_t sub_blocks_per_tile = s.stored_cols() / kW2ColTile;
  const int64_t sub_block = (row / kW2RowTile) * sub_blocks_per_tile + stored_col / kW2ColTile;
  const int c = stored_col % kW2ColTile;
  return {sub_block * kW2SubBlockBytes + (row % kW2RowTile) * 4 + c % 4, 2 * (c / 4)};
}
inline int64_t W2ParamIndex(int row, int group, int groups) {
  return (int64_t{row / kW2RowTile} * groups + group) * kW2RowTile + row % kW2RowTile;
}

inline constexpr int kW2MaxZero = 6;

// Code q's place on a group's grid, in units of the group's scale.
inline int W2Level(int q, int zero) { return 2 * q - zero; }

// One group's quantization parameters.
struct W2GroupParams {
  float scale;  // rounded to fp16
  uint8_t zero;
};

// Chooses scale and zero for `values` minimizing squared error over a grid of clipping ranges
// (min/max shrunk toward zero); `weights` (optional, same size) weights each error term.
W2GroupParams ChooseW2Params(std::span<const float> values, std::span<const float> weights = {});
// The nearest code, ties to even. Adding and subtracting 1.5 * 2^23 rounds a float to the nearest
// integer, ties to even, as nearbyint does in the default rounding mode, for |x| < 2^22; beyond
// that the sum is still outside [0, 3] on the same side, so the clamped code is the same. (nearbyint
// is a libm call on baseline x86-64, and was most of a clipping search's time.)
inline constexpr float kW2RoundingBias = 12582912.0f;  // 1.5 * 2^23
inline uint8_t QuantizeW2Value(float v, const W2GroupParams& p) {
  const float x = (v / p.scale + p.zero) * 0.5f;
  const float q = (x + kW2RoundingBias) - kW2RoundingBias;
  return static_cast<uint8_t>(q < 0 ? 0 : q > 3 ? 3 : q);
}
inline float DequantizeW2Value(uint8_t q, const W2GroupParams& p) {
  return p.scale * static_cast<float>(W2Level(q, p.zero));
}

// Round-to-nearest quantization of a row-major fp32 matrix (rows x cols). With `keep` (rows x
// cols, 1 = kept) the matrix is stored 2:4 sparse; `keep` must hold exactly 2 per group of 4.
absl::StatusOr<W2Matrix> QuantizeW2(std::span<const float> w, const W2Shape& shape,
                                    std::span<const uint8_t> keep = {});

// Writes one quantized value (and, for 2:4 tensors, its position) or parameters into a matrix.
void SetW2Code(W2Matrix& m, int row, int stored_col, uint8_t code, uint8_t position = 0);
void SetW2Params(W2Matrix& m, int row, int group, const W2GroupParams& params);

// The code stored at (row, stored column), and the original column it belongs to (for 2:4
// tensors, from the index tensor); a column >= shape.cols is padding.
inline uint8_t W2StoredCode(const W2View& w, int row, int stored_col) {
  const CodeSlot slot = W2CodeSlot(w.shape, row, stored_col);
  return (w.codes[slot.byte] >> slot.shift) & 3;
}
inline int W2OriginalColumn(const W2View& w, int row, int stored_col) {
  if (!w.shape.sparse24) return stored_col;
  const CodeSlot slot = W2CodeSlot(w.shape, row, stored_col);
  return 4 * (stored_col / 2) + ((w.sparse_index[slot.byte] >> slot.shift) & 3);
}

// Reads back: the dense fp32 row (cols values; pruned weights are 0).
void DequantizeW2Row(const W2View& w, int row, std::span<float> out);

}  // namespace accllm
