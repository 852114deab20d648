#include "runtime/quant/a8.h"

#include <algorithm>
#include <cmath>

#include "runtime/common/round.h"

namespace accllm {

A8Batch::A8Batch(int cols_padded, int group_size, int capacity)
    : cols_(cols_padded),
      group_size_(group_size),
      groups_(cols_padded / group_size),
      capacity_(capacity),
      codes_(static_cast<std::size_t>(cols_padded) * capacity + 64, 0),  // +64: SIMD over-read
      biased_codes_(codes_.size(), 128),
      scales_(capacity, 0.0f),
      group_sums_(static_cast<std::size_t>(groups_) * capacity, 0) {}

void A8Batch::Quantize(int t, std::span<const float> x) {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  scales_[t] = amax / 127.0f;
  int8_t* q = codes_.data() + static_cast<std::size_t>(t) * cols_;
  for (std::size_t i = 0; i < x.size(); ++i) q[i] = static_cast<int8_t>(RoundHalfEven(x[i] * inverse));
  std::fill(q + x.size(), q + cols_, int8_t{0});
  uint8_t* biased = biased_codes_.data() + static_cast<std::size_t>(t) * cols_;
  for (int i = 0; i < cols_; ++i) biased[i] = static_cast<uint8_t>(q[i] + 128);
  int32_t* sums = group_sums_.data() + static_cast<std::size_t>(t) * groups_;
  for (int g = 0; g < groups_; ++g) {
    int32_t s = 0;
    for (int i = 0; i < group_size_; ++i) s += q[g * group_size_ + i];
    sums[g] = s;
  }
  if (t >= tokens_) tokens_ = t + 1;
}

}  // namespace accllm
