#include "runtime/kv/kv_storage.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "runtime/common/half.h"
#include "runtime/common/round.h"

namespace accllm {

const char* KvPrecisionName(KvPrecision precision) {
  return precision == KvPrecision::kF32 ? "f32" : "kv4";
}

std::pair<float, float> ReduceKv4Lanes(const float* lo, const float* hi) {
  return {*std::min_element(lo, lo + kKv4ExtremeLanes), *std::max_element(hi, hi + kKv4ExtremeLanes)};
}

namespace {

// The smallest and largest of x (not empty), as std::minmax_element finds them but without its
// branches, which mispredict on every cached vector: a min and a max over 16 lanes, then across
// them. The same values for any input without NaN (an exact zero may come out with either sign,
// which no code, scale or dequantized value depends on).
std::pair<float, float> Extremes(std::span<const float> x) {
  constexpr std::size_t kLanes = kKv4ExtremeLanes;
  float lo[kLanes], hi[kLanes];
  for (std::size_t k = 0; k < kLanes; ++k) lo[k] = hi[k] = x[0];
  std::size_t i = 0;
  for (; i + kLanes <= x.size(); i += kLanes) {
    for (std::size_t k = 0; k < kLanes; ++k) {
      lo[k] = std::min(lo[k], x[i + k]);
      hi[k] = std::max(hi[k], x[i + k]);
    }
  }
  for (; i < x.size(); ++i) {
    lo[0] = std::min(lo[0], x[i]);
    hi[0] = std::max(hi[0], x[i]);
  }
  return ReduceKv4Lanes(lo, hi);
}

}  // namespace

Kv4Coding Kv4CodingFor(float x_min, float x_max) {
  const uint16_t min16 = FloatToFp16(x_min);
  const float lo = Fp16ToFloat(min16);
  const uint16_t scale16 = FloatToFp16((x_max - lo) / 15.0f);
  const float scale = Fp16ToFloat(scale16);
  return {{scale16, min16}, lo, scale > 0.0f ? 1.0f / scale : 0.0f};
}

Kv4Params QuantizeKv4(std::span<const float> x, uint8_t* codes) {
  const auto [x_min, x_max] = Extremes(x);
  const Kv4Coding coding = Kv4CodingFor(x_min, x_max);
  // A vector past fp16's range (an infinite min or scale) makes NaN here: code 0, as the SIMD
  // kernels' conversion gives it.
  const auto code = [&](float v) {
    return static_cast<int>(RoundHalfEvenWithin((v - coding.lo) * coding.inverse, 0.0f, 15.0f));
  };
  for (std::size_t i = 0; i < x.size(); i += 2) codes[i / 2] = static_cast<uint8_t>(code(x[i]) | code(x[i + 1]) << 4);
  return coding.params;
}

KvStorage::KvStorage(const LlamaConfig& config, int pages, int page_tokens, KvPrecision precision,
                     bool allocate)
    : precision_(precision),
      kv_heads_(config.n_kv_heads),
      head_size_(config.head_size()),
      pages_(pages),
      page_tokens_(page_tokens),
      vectors_(int64_t{config.n_layers} * pages * config.n_kv_heads * page_tokens) {
  ok_ = true;
  for (int i = 0; i < 4; ++i) {
    const auto r = static_cast<KvRegion>(i);
    const int64_t bytes = region_bytes(r);
    if (bytes == 0 || !allocate) continue;  // fp32 has no params
    owned_[i] = AlignedBuffer(static_cast<std::size_t>(bytes));
    regions_[i] = owned_[i].data();
    ok_ = ok_ && regions_[i] != nullptr;
  }
}

int64_t KvStorage::vector_bytes(KvRegion r) const {
  const bool params = r == KvRegion::kKeyParams || r == KvRegion::kValueParams;
  if (precision_ == KvPrecision::kF32) return params ? 0 : int64_t{head_size_} * 4;
  return params ? int64_t{sizeof(Kv4Params)} : head_size_ / 2;
}

int64_t KvStorage::total_bytes() const {
  int64_t total = 0;
  for (int i = 0; i < 4; ++i) total += region_bytes(static_cast<KvRegion>(i));
  return total;
}

void KvStorage::WriteHead(int layer, int page, int slot, int head, const float* k, const float* v,
                          Kv4QuantizeFn quantize) {
  const int64_t vector = VectorIndex(layer, page, head, slot);
  for (int part = 0; part < 2; ++part) {
    const float* x = part == 0 ? k : v;
    std::byte* codes = mutable_region(part == 0 ? KvRegion::kKeyCodes : KvRegion::kValueCodes);
    if (precision_ == KvPrecision::kF32) {
      std::memcpy(codes + vector * head_size_ * 4, x, head_size_ * sizeof(float));
    } else {
      auto* params = reinterpret_cast<Kv4Params*>(mutable_region(part == 0 ? KvRegion::kKeyParams : KvRegion::kValueParams));
      params[vector] = quantize({x, static_cast<std::size_t>(head_size_)},
                                   reinterpret_cast<uint8_t*>(codes) + vector * (head_size_ / 2));
    }
  }
}

}  // namespace accllm
