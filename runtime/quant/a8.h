// A8: activations as int8 with one fp32 scale per token (symmetric): x ~= scale * q.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/common/aligned_buffer.h"

namespace accllm {

// Where one token's A8 codes go: `cols` codes (x's values, then zeros), the same plus 128 as
// unsigned bytes, the sum of the codes in each group of `group_size` columns, and the scale.
struct A8Row {
  int cols;
  int group_size;
  int8_t* codes;
  uint8_t* biased_codes;
  int32_t* group_sums;
  float* scale;
};

// Quantizes x (at most row.cols values) into `row`: amax = max |x_i|, scale = amax / 127, and
// code_i = A8Code(x_i, inverse) (runtime/common/a8_code.h) with inverse = 127 / amax, or 0 when
// amax is not above 0 (NaN included). The definition the SIMD kernels (CpuKernels::a8_quantize)
// match bit for bit.
void QuantizeA8(std::span<const float> x, const A8Row& row);
using A8QuantizeFn = void (*)(std::span<const float> x, const A8Row& row);

// Quantized activations of up to `capacity` tokens, each padded with zeros to `cols_padded`.
// Per token it also keeps the sum of the codes in each `group_size` columns, which the W2
// kernels use to apply zero points once per group instead of once per weight.
class A8Batch {
 public:
  // Codes can be read for this many tokens (capacity rounded up to whole 16-token tiles: the AMX
  // kernels load 16 tokens at a time and ignore those past tokens()).
  static int ReadableTokens(int capacity) { return (capacity + 15) / 16 * 16; }

  A8Batch(int cols_padded, int group_size, int capacity);

  // Quantizes `x` (at most cols_padded values; the rest are zero) as token `t`, by `quantize`
  // (QuantizeA8, or a CPU kernel table's a8_quantize: the same bits).
  // note: call only with t < capacity(); tokens() becomes max(tokens(), t + 1). To quantize
  // tokens from several threads at once, Resize first: then no call writes tokens().
  void Quantize(int t, std::span<const float> x, A8QuantizeFn quantize = QuantizeA8);
  void Clear() { tokens_ = 0; }
  // note: call only with tokens <= capacity(); their codes are whatever Quantize wrote.
  void Resize(int tokens) { tokens_ = tokens; }

  int tokens() const { return tokens_; }
  int capacity() const { return capacity_; }
  int cols_padded() const { return cols_; }
  int group_size() const { return group_size_; }
  float scale(int t) const { return scales_[t]; }
  const float* scales() const { return scales_.data(); }
  const int8_t* codes(int t) const { return codes_.as<int8_t>() + static_cast<std::size_t>(t) * cols_; }
  // The codes plus 128, as unsigned bytes: for kernels whose signed operand is the weight.
  const uint8_t* biased_codes(int t) const { return biased_codes_.as<uint8_t>() + static_cast<std::size_t>(t) * cols_; }
  const int32_t* group_sums(int t) const { return group_sums_.data() + static_cast<std::size_t>(t) * groups_; }

 private:
  int cols_;
  int group_size_;
  int groups_;
  int capacity_;
  int tokens_ = 0;
  // Cache-line aligned: AMX reads 64-byte rows of codes, which a heap vector's 16-byte alignment
  // split over two lines each (2.4x slower on a Xeon's tile unit).
  AlignedBuffer codes_;
  AlignedBuffer biased_codes_;
  std::vector<float> scales_;
  std::vector<int32_t> group_sums_;
};

}  // namespace accllm
