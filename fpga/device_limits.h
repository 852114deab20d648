// What the accelerator's fixed hardware can hold, checked where each limit is known:
//   * when a device is made: the model's widths against the W2A8 unit's on-chip activation buffers and
//     the head size against the attention unit (CheckModelFitsUnits), the KV pool against the
//     U280's KV channels (KvPagesForCard);
//   * at admission: how many tokens one query may attend to (kMaxAttentionSpan, reported by the
//     device as Backend::max_attention_span);
//   * before each run, defensively: the attention batch (FitsAttentionUnit).
// Both FPGA devices (fpga-sim and a card through XRT) apply the same limits, and `accllm
// fpga-model` the same KV capacity.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/kv_channels.h"
#include "runtime/engine/backend_factory.h"
#include "runtime/kv/attention_batch.h"
#include "runtime/model/llama_config.h"
#include "runtime/quant/w2.h"

namespace accllm::fpga {

// Tokens one query may see: the attention unit keeps every score of a query on chip.
inline constexpr int kMaxAttentionSpan = hls::kKv4MaxVisible;

// The U280's HBM as the design uses it for the KV cache (fpga/build/u280.cfg,
// fpga/kernels/kv_channels.h): striped over pseudo-channels 28-31 by page block, 256 MiB each.
inline constexpr int64_t kHbmPseudoChannelBytes = int64_t{256} << 20;
inline constexpr const char* kKvChannelNames = "HBM[28], HBM[29], HBM[30], HBM[31]";
// XRT backs every buffer with whole 4 KiB pages.
inline constexpr int64_t kBufferAlignment = 4096;

// How a card lays out a KV cache of `pages` pages in each KV channel's buffer: the four regions
// (key codes, key params, value codes, value params) of its quarter of the page blocks, each
// region rounded up to whole buffer pages.
struct KvPlacement {
  int64_t region_offset[4] = {};
  int64_t channel_bytes = 0;
  int page_tokens = 0;

  // The table the units read, for channel buffers at these device addresses.
  hls::KvChannelTable Table(const uint64_t (&channels)[hls::kKvChannels]) const;
};
KvPlacement PlaceKv(const LlamaConfig& config, int page_tokens, int64_t pages);
// The most KV pages the channels hold for this model.
int KvPagesThatFit(const LlamaConfig& config, int page_tokens);
// OK, or RESOURCE_EXHAUSTED naming the channels and the numbers.
absl::Status CheckKvPagesFit(const LlamaConfig& config, int page_tokens, int64_t pages);
// The pages a card's KV pool gets: options.kv_pages (0: one full-length sequence, as the CPU
// engine sizes it), capped to what fits when options.kv_pages_fit_device, else refused if it
// does not fit.
absl::StatusOr<int> KvPagesForCard(const BackendOptions& options, const LlamaConfig& config);

// INVALID_ARGUMENT when the model cannot run on the units at all: a linear layer wider than the
// W2A8 unit's activation buffers, or a head size the attention unit does not take.
absl::Status CheckModelFitsUnits(const LlamaConfig& config,
                                 std::span<const std::pair<TensorId, W2View>> linears);

// Whether a layer's attention batch fits the attention unit's on-chip buffers (the query head
// and the scores of every token one query sees). OUT_OF_RANGE: the request asked too much.
absl::Status FitsAttentionUnit(const AttentionBatch& batch);

}  // namespace accllm::fpga
