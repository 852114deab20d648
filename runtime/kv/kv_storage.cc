#include "runtime/kv/kv_storage.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/common/half.h"
#include "runtime/common/round.h"

namespace accllm {

const char* KvPrecisionName(KvPrecision precision) {
  return precision == KvPrecision::kF32 ? "f32" : "kv4";
}

Kv4Params QuantizeKv4(std::span<const float> x, uint8_t* codes) {
  const auto [lo_it, hi_it] = std::minmax_element(x.begin(), x.end());
  const uint16_t min16 = FloatToFp16(*lo_it);
  const float lo = Fp16ToFloat(min16);
  const uint16_t scale16 = FloatToFp16((*hi_it - lo) / 15.0f);
  const float scale = Fp16ToFloat(scale16);
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  for (std::size_t i = 0; i < x.size(); i += 2) {
    uint8_t pair = 0;
    for (int j = 0; j < 2; ++j) {
      const float q = std::clamp(RoundHalfEven((x[i + j] - lo) * inverse), 0.0f, 15.0f);
      pair |= static_cast<uint8_t>(q) << (4 * j);
    }
    codes[i / 2] = pair;
  }
  return {scale16, min16};
}

KvStorage::KvStorage(const LlamaConfig& config, int pages, int page_tokens, KvPrecision precision)
    : precision_(precision),
      n_layers_(config.n_layers),
      kv_heads_(config.n_kv_heads),
      head_size_(config.head_size()),
      pages_(pages),
      page_tokens_(page_tokens) {
  const int64_t vectors = int64_t{kv_heads_} * page_tokens_;
  half_bytes_ = precision == KvPrecision::kF32
                    ? vectors * head_size_ * 4
                    : vectors * (head_size_ / 2) + vectors * static_cast<int64_t>(sizeof(Kv4Params));
  page_bytes_ = (2 * half_bytes_ + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
  memory_ = AlignedBuffer(static_cast<std::size_t>(page_bytes_ * pages_ * n_layers_));
}

std::byte* KvStorage::Page(int layer, int page) const {
  return const_cast<std::byte*>(memory_.data()) + (int64_t{layer} * pages_ + page) * page_bytes_;
}

void KvStorage::Write(int layer, int page, int slot, const float* k, const float* v) {
  std::byte* base = Page(layer, page);
  for (int part = 0; part < 2; ++part) {
    const float* src = part == 0 ? k : v;
    std::byte* half = base + part * half_bytes_;
    for (int h = 0; h < kv_heads_; ++h) {
      const int64_t vector = int64_t{h} * page_tokens_ + slot;
      const float* x = src + h * head_size_;
      if (precision_ == KvPrecision::kF32) {
        std::memcpy(half + vector * head_size_ * 4, x, head_size_ * sizeof(float));
      } else {
        uint8_t* codes = reinterpret_cast<uint8_t*>(half) + vector * (head_size_ / 2);
        auto* params = reinterpret_cast<Kv4Params*>(half + int64_t{kv_heads_} * page_tokens_ * (head_size_ / 2));
        params[vector] = QuantizeKv4({x, static_cast<std::size_t>(head_size_)}, codes);
      }
    }
  }
}

KvHeadView KvStorage::View(int layer, int page, int head, bool values) const {
  const std::byte* half = Page(layer, page) + (values ? half_bytes_ : 0);
  const int64_t first = int64_t{head} * page_tokens_;
  if (precision_ == KvPrecision::kF32) {
    return {precision_, reinterpret_cast<const float*>(half) + first * head_size_, nullptr, nullptr};
  }
  const auto* codes = reinterpret_cast<const uint8_t*>(half);
  const auto* params = reinterpret_cast<const Kv4Params*>(half + int64_t{kv_heads_} * page_tokens_ * (head_size_ / 2));
  return {precision_, nullptr, codes + first * (head_size_ / 2), params + first};
}

KvHeadView KvStorage::Keys(int layer, int page, int head) const { return View(layer, page, head, false); }
KvHeadView KvStorage::Values(int layer, int page, int head) const { return View(layer, page, head, true); }

}  // namespace accllm
