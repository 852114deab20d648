#include "runtime/quant/a8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <new>

#include "runtime/common/a8_code.h"

namespace accllm {
namespace {

// max |x_i|, exactly as a float max would give it for any input without NaN: |x| as sign-cleared
// bits orders like the float, and an integer max over 16 lanes vectorizes (a float max reduction
// does not without -ffast-math: it must keep NaN semantics). 5x faster on an 11008-wide token.
float AbsMax(std::span<const float> x) {
  uint32_t lanes[16] = {};
  std::size_t i = 0;
  for (; i + 16 <= x.size(); i += 16) {
    for (int k = 0; k < 16; ++k) {
      uint32_t bits;
      std::memcpy(&bits, &x[i + k], sizeof bits);
      bits &= 0x7fffffffu;
      lanes[k] = bits > lanes[k] ? bits : lanes[k];
    }
  }
  for (; i < x.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], sizeof bits);
    lanes[0] = std::max(lanes[0], bits & 0x7fffffffu);
  }
  const uint32_t m = *std::max_element(std::begin(lanes), std::end(lanes));
  float amax;
  std::memcpy(&amax, &m, sizeof amax);
  return amax;
}

}  // namespace

A8Batch::A8Batch(int cols_padded, int group_size, int capacity)
    : cols_(cols_padded),
      group_size_(group_size),
      groups_(cols_padded / group_size),
      capacity_(capacity),
      codes_(static_cast<std::size_t>(cols_padded) * ReadableTokens(capacity) + 64),  // zeros; +64: SIMD over-read
      biased_codes_(codes_.size()),
      scales_(capacity, 0.0f),
      group_sums_(static_cast<std::size_t>(groups_) * capacity, 0) {
  if (codes_.size() == 0 || biased_codes_.size() == 0) throw std::bad_alloc();  // as the vectors did
  std::memset(biased_codes_.data(), 128, biased_codes_.size());
}

void QuantizeA8(std::span<const float> x, const A8Row& row) {
  // The row's sizes in locals: the byte stores below may alias any object as far as the compiler
  // knows, so loops bounded by a member would re-read it per byte and stay scalar.
  const int cols = row.cols, group_size = row.group_size, groups = cols / group_size;
  const float amax = AbsMax(x);
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  *row.scale = amax / 127.0f;
  int8_t* q = row.codes;
  for (std::size_t i = 0; i < x.size(); ++i) q[i] = A8Code(x[i], inverse);
  std::fill(q + x.size(), q + cols, int8_t{0});
  uint8_t* biased = row.biased_codes;
  for (int i = 0; i < cols; ++i) biased[i] = static_cast<uint8_t>(q[i] + 128);
  for (int g = 0; g < groups; ++g) {
    int32_t s = 0;
    for (int i = 0; i < group_size; ++i) s += q[g * group_size + i];
    row.group_sums[g] = s;
  }
}

void A8Batch::Quantize(int t, std::span<const float> x, A8QuantizeFn quantize) {
  const std::size_t offset = static_cast<std::size_t>(t) * cols_;
  quantize(x, {cols_, group_size_, codes_.as<int8_t>() + offset, biased_codes_.as<uint8_t>() + offset,
               group_sums_.data() + static_cast<std::size_t>(t) * groups_, &scales_[t]});
  if (t >= tokens_) tokens_ = t + 1;
}

}  // namespace accllm
