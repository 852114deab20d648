// Physical KV memory of one device: n_layers x pages x page_tokens tokens, in fp32 or KV4.
//
// KV4 stores one token's key (or value) for one head as head_size 4-bit codes, two per byte
// (low nibble first), plus an fp16 scale and min: x = min + scale * q, q in [0, 15]. That is
// 4 + 32 / head_size bits per value (4.5 at head size 64).
//
// Four arrays (regions) hold every cached vector, all indexed by one vector number
//
//   v = ((layer * pages + page) * kv_heads + head) * page_tokens + slot
//
//   key codes   [v][head_size / 2]  (fp32: [v][head_size] floats)     key params   [v]
//   value codes [v][head_size / 2]                                     value params [v]
//
// so that an attention kernel given the four base addresses reads any run of consecutive slots of
// one (layer, page, head) from its vector number alone. A card numbers its vectors the same way
// and places them over its KV channels (fpga/kernels/kv_channels.h). Quantization happens once,
// when a token is written.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <utility>

#include "runtime/common/aligned_buffer.h"
#include "runtime/model/llama_config.h"

namespace accllm {

enum class KvPrecision { kF32, kKv4 };
const char* KvPrecisionName(KvPrecision precision);

struct Kv4Params {
  uint16_t scale;  // fp16
  uint16_t min;    // fp16
};
static_assert(sizeof(Kv4Params) == 4, "wrong KV4 params size");

// Quantizes `x` (head_size values) into codes (head_size / 2 bytes).
Kv4Params QuantizeKv4(std::span<const float> x, uint8_t* codes);
// QuantizeKv4 or a SIMD version of it with the same results (a CPU kernel: runtime/cpu/kernels.h).
using Kv4QuantizeFn = Kv4Params (*)(std::span<const float> x, uint8_t* codes);

// QuantizeKv4's parts, for SIMD versions of it. It finds a vector's extremes in kKv4ExtremeLanes
// running minima and maxima, lane k over x[k], x[k + 16], ... (lo = std::min(lo, x), hi =
// std::max(hi, x)), reduced by ReduceKv4Lanes; Kv4CodingFor gives the parameters and the affine
// map each value's code is rounded from: RoundHalfEvenWithin((x - lo) * inverse, 0, 15) (round.h).
inline constexpr int kKv4ExtremeLanes = 16;
std::pair<float, float> ReduceKv4Lanes(const float* lo, const float* hi);
struct Kv4Coding {
  Kv4Params params;
  float lo, inverse;
};
Kv4Coding Kv4CodingFor(float x_min, float x_max);

// The d-th 4-bit code of a KV4 vector (low nibble first), as a float (exact): the value is
// min + scale * Kv4Code(codes, d).
inline float Kv4Code(const uint8_t* codes, int d) { return static_cast<float>((codes[d >> 1] >> (4 * (d & 1))) & 15); }

enum class KvRegion { kKeyCodes, kKeyParams, kValueCodes, kValueParams };

class KvStorage {
 public:
  // With allocate false the storage is a layout only (vector numbers and sizes, no memory): the
  // cache of a device that keeps it itself (an FPGA card places it over its own channels).
  KvStorage(const LlamaConfig& config, int pages, int page_tokens, KvPrecision precision, bool allocate = true);

  // Stores token `slot` of `page` in `layer` for one KV head: k and v hold head_size floats each.
  void WriteHead(int layer, int page, int slot, int head, const float* k, const float* v,
                 Kv4QuantizeFn quantize = QuantizeKv4);

  int64_t VectorIndex(int layer, int page, int head, int slot) const {
    return ((int64_t{layer} * pages_ + page) * kv_heads_ + head) * page_tokens_ + slot;
  }
  // Base of a region (see the layout above).
  const std::byte* region(KvRegion r) const { return regions_[static_cast<int>(r)]; }
  std::byte* mutable_region(KvRegion r) { return regions_[static_cast<int>(r)]; }

  KvPrecision precision() const { return precision_; }
  int pages() const { return pages_; }
  int page_tokens() const { return page_tokens_; }
  int64_t vector_bytes(KvRegion r) const;  // one vector's share of a region
  int64_t region_bytes(KvRegion r) const { return vectors_ * vector_bytes(r); }
  int64_t total_bytes() const;
  bool ok() const { return ok_; }

 private:

  KvPrecision precision_;
  int kv_heads_, head_size_;
  int pages_, page_tokens_;
  int64_t vectors_;
  std::byte* regions_[4] = {};
  AlignedBuffer owned_[4];  // with the default allocator
  bool ok_ = false;
};

}  // namespace accllm
