#include "fpga/device_limits.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/kv_channels.h"
#include "fpga/kernels/w2a8_engine.h"
#include "runtime/kv/sequence_kv.h"

namespace accllm::fpga {
namespace {

int64_t AlignUp(int64_t bytes) { return (bytes + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment; }
double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

KvPlacement PlaceKv(const LlamaConfig& c, int page_tokens, int64_t pages) {
  const int64_t blocks = int64_t{c.n_layers} * pages * c.n_kv_heads;
  const int64_t channel_vectors = (blocks + hls::kKvChannels - 1) / hls::kKvChannels * page_tokens;
  KvPlacement p;
  p.page_tokens = page_tokens;
  for (int r = 0; r < 4; ++r) {
    p.region_offset[r] = p.channel_bytes;
    p.channel_bytes += AlignUp(channel_vectors * hls::KvVectorBytes(r, c.head_size()));
  }
  return p;
}

hls::KvChannelTable KvPlacement::Table(const uint64_t (&channels)[hls::kKvChannels]) const {
  hls::KvChannelTable table{};
  for (int c = 0; c < hls::kKvChannels; ++c) table.channel[c] = channels[c];
  for (int r = 0; r < 4; ++r) table.region_offset[r] = region_offset[r];
  table.page_tokens = page_tokens;
  return table;
}

int KvPagesThatFit(const LlamaConfig& c, int page_tokens) {
  // Bytes per page over the four channels without the rounding, then step down past the rounding.
  const int64_t per_page = int64_t{c.n_layers} * c.n_kv_heads * page_tokens * (c.head_size() + 8);
  int64_t pages = per_page > 0 ? hls::kKvChannels * kHbmPseudoChannelBytes / per_page : 0;
  while (pages > 0 && PlaceKv(c, page_tokens, pages).channel_bytes > kHbmPseudoChannelBytes) --pages;
  return static_cast<int>(std::min<int64_t>(pages, INT32_MAX));
}

absl::Status CheckKvPagesFit(const LlamaConfig& c, int page_tokens, int64_t pages) {
  const int64_t need = PlaceKv(c, page_tokens, pages).channel_bytes;
  if (need > kHbmPseudoChannelBytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%d KV pages of %d tokens need %.1f MiB in each KV channel (%s), which holds %.0f MiB; at most %d pages fit",
        pages, page_tokens, MiB(need), kKvChannelNames, MiB(kHbmPseudoChannelBytes), KvPagesThatFit(c, page_tokens)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> KvPagesForCard(const BackendOptions& options, const LlamaConfig& config) {
  const int wanted = options.kv_pages > 0 ? options.kv_pages
                                          : SequenceKv::MaxPages(LambdaFor(options), options.page_tokens,
                                                                 options.max_step_tokens, config.max_seq_len);
  if (CheckKvPagesFit(config, options.page_tokens, wanted).ok()) return wanted;
  if (options.kv_pages_fit_device) return KvPagesThatFit(config, options.page_tokens);
  return CheckKvPagesFit(config, options.page_tokens, wanted);
}

namespace {

// The attention unit is built for a few head sizes (fixed trip counts in hardware).
absl::Status CheckHeadSize(int head_size) {
  if (hls::Kv4HeadSizeSupported(head_size)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("head size ", head_size, " does not fit the attention unit (built for ",
                                                 absl::StrJoin(hls::kKv4HeadSizes, ", "), ")"));
}

}  // namespace

absl::Status CheckModelFitsUnits(const LlamaConfig& config, std::span<const std::pair<TensorId, W2View>> linears) {
  if (absl::Status s = CheckHeadSize(config.head_size()); !s.ok()) return s;
  for (const auto& [id, w] : linears) {
    // The unit stages a call's activations (all input columns, 2:4 or not) and group sums on chip.
    if (w.shape.cols_padded() > hls::kW2MaxCols || w.shape.groups() > hls::kW2MaxGroups) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a linear layer with ", w.shape.cols, " inputs (", w.shape.cols_padded(), " padded, in ", w.shape.groups(),
          " groups) is wider than the W2A8 unit holds on chip (", hls::kW2MaxCols, " inputs, ", hls::kW2MaxGroups,
          " groups)"));
    }
  }
  return absl::OkStatus();
}

absl::Status FitsAttentionUnit(const AttentionBatch& b) {
  if (absl::Status s = CheckHeadSize(b.head_size); !s.ok()) return s;
  for (int i = 0; i < b.items; ++i) {
    int visible = 0;
    for (int r = b.item_runs[i]; r < b.item_runs[i + 1]; ++r) visible += b.run_count[r];
    if (visible > kMaxAttentionSpan) {
      return absl::OutOfRangeError(absl::StrCat("a query sees ", visible, " tokens; the attention unit holds ",
                                                kMaxAttentionSpan, " (use a Λ window)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace accllm::fpga
