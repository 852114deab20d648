// Where the KV4 cache is on a card: striped over the four KV pseudo-channels (HBM 28-31) by page
// block, the page_tokens vectors of one (layer, page, head) (runtime/kv/kv_storage.h numbers a
// vector ((layer * pages + page) * kv_heads + head) * page_tokens + slot). Block b lives in
// channel b % 4, as block b / 4 of that channel's copy of each of the four regions (key codes,
// key params, value codes, value params). A page run stays in one block, so each run is read from
// one channel, and a layer's heads and pages spread over all four.
#pragma once

#include <cstdint>

namespace accllm::hls {

inline constexpr int kKvChannels = 4;

// The card's placement of its KV cache, in device memory (one per card, written by the host).
struct KvChannelTable {
  uint64_t channel[kKvChannels];  // each KV pseudo-channel's buffer
  int64_t region_offset[4];       // each region's byte offset in every channel's buffer
  int64_t page_tokens;
};

// One region vector's bytes: head_size / 2 codes, or an fp16 scale and min.
inline int64_t KvVectorBytes(int region, int head_size) { return region % 2 == 0 ? head_size / 2 : 4; }

// The byte offset of vector v of `region` in its channel's buffer, and that channel.
inline int KvChannelOf(int64_t v, int64_t page_tokens) { return static_cast<int>(v / page_tokens % kKvChannels); }
inline int64_t KvOffsetOf(const int64_t region_offset[4], int64_t page_tokens, int region, int head_size, int64_t v) {
  const int64_t block = v / page_tokens;
  return region_offset[region] + (block / kKvChannels * page_tokens + v % page_tokens) * KvVectorBytes(region, head_size);
}

// The channels as a unit reaches them (C simulation: host memory), with the layer's first vector
// added to the vector numbers it is given.
struct KvChannels {
  uint8_t* channel[kKvChannels];
  int64_t region_offset[4];
  int64_t page_tokens;
  int64_t first_vector;

  template <typename T>
  T* Vector(int region, int head_size, int64_t v) const {
    const int64_t g = first_vector + v;
    return reinterpret_cast<T*>(channel[KvChannelOf(g, page_tokens)] +
                                KvOffsetOf(region_offset, page_tokens, region, head_size, g));
  }
};

}  // namespace accllm::hls
