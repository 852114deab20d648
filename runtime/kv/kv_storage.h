// Physical KV memory of one device: n_layers x pages x page_tokens tokens, in fp32 or KV4.
//
// KV4 stores one token's key (or value) for one head as head_size 4-bit codes, two per byte
// (low nibble first), plus an fp16 scale and min: x = min + scale * q, q in [0, 15]. That is
// 4 + 32 / head_size bits per value (4.5 at head size 64). A page of one layer is
//
//   K codes [kv_heads][page_tokens][head_size / 2] | K params [kv_heads][page_tokens] |
//   V codes ...                                    | V params ...
//
// with each page 64-byte aligned. Quantization happens once, when a token is written.
#pragma once

#include <cstdint>
#include <span>

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

// One head's cached vectors, as the attention loop reads them.
struct KvHeadView {
  KvPrecision precision;
  const float* f32;          // [page_tokens][head_size] when kF32
  const uint8_t* codes;      // [page_tokens][head_size / 2] when kKv4
  const Kv4Params* params;   // [page_tokens] when kKv4
};

class KvStorage {
 public:
  KvStorage(const LlamaConfig& config, int pages, int page_tokens, KvPrecision precision);

  // Stores token `slot` of `page` in `layer`: k and v hold kv_dim floats each.
  void Write(int layer, int page, int slot, const float* k, const float* v);
  KvHeadView Keys(int layer, int page, int head) const;
  KvHeadView Values(int layer, int page, int head) const;

  KvPrecision precision() const { return precision_; }
  int pages() const { return pages_; }
  int page_tokens() const { return page_tokens_; }
  int64_t page_bytes() const { return page_bytes_; }  // one layer's share of a page
  int64_t total_bytes() const { return static_cast<int64_t>(memory_.size()); }
  bool ok() const { return memory_.size() > 0; }

 private:
  std::byte* Page(int layer, int page) const;
  KvHeadView View(int layer, int page, int head, bool values) const;

  KvPrecision precision_;
  int n_layers_, kv_heads_, head_size_;
  int pages_, page_tokens_;
  int64_t half_bytes_;  // K (or V) part of a page: codes then params, or fp32
  int64_t page_bytes_;
  AlignedBuffer memory_;
};

}  // namespace accllm
