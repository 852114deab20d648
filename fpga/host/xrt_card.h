// One U280 card through XRT's native API: opens the device, checks and loads the xclbin, uploads
// every W2 linear layer as stripes of row tiles into the HBM bank of each W2A8 compute unit (the
// bank comes from the unit's argument connectivity: kernel.group_id), keeps the KV cache in the
// attention units' HBM banks, and runs linear layers and attention on the units. Card faults
// come back as UNAVAILABLE (open, load) or INTERNAL (a run that fails or times out); the caller
// marks the card unhealthy.
#pragma once

#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_kernel.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/host/stripe_plan.h"
#include "runtime/kv/attention_batch.h"
#include "runtime/kv/kv_storage.h"
#include "runtime/quant/a8.h"
#include "runtime/quant/w2.h"

namespace accllm::fpga {

// Cards XRT sees (0 when none, or when XRT cannot start).
int CountCards();

class XrtCard {
 public:
  static absl::StatusOr<std::unique_ptr<XrtCard>> Open(int index, const std::string& xclbin_path);

  // Copies a W2 tensor to the card, striped over the W2A8 units.
  absl::Status Upload(const W2View& w);
  // y[t * ldy + r] = W x_t on the card; `w` must have been uploaded.
  absl::Status MatMul(const W2View& w, const A8Batch& x, float* y, int64_t ldy);

  // KV cache region `region` as a buffer in the attention units' bank, mapped for the host: the
  // engine writes new vectors through the mapping and Attention copies them to the card.
  // Null when the xclbin has no attention units or the bank is full.
  std::byte* AllocateKv(KvRegion region, int64_t bytes);
  // One layer's attention (the KV cache must come from AllocateKv): the vectors the step wrote go
  // to HBM, the queries and runs in; the items are split between the attention units.
  absl::Status Attention(const AttentionBatch& batch, float* out);

  int units() const { return static_cast<int>(units_.size()); }
  int attention_units() const { return static_cast<int>(attention_units_.size()); }
  const std::string& platform() const { return platform_; }

  // Exposed for tests: the memory bank (group id) of a unit's argument.
  int BankOf(int unit, int arg) const { return units_.at(unit).group_id(arg); }

 private:
  struct StripeBuffers {  // one unit's share of a layer, on the card
    Stripe plan;
    xrt::bo codes, index, scales, zeros, out;
    int64_t out_bytes = 0;  // allocated so far (an empty xrt::bo cannot be asked its size)
  };
  struct AttentionBuffers {  // one attention unit's inputs and outputs
    xrt::bo q, q_sink, item_runs, item_sink_runs, run_start, run_count, out;
    int64_t item_capacity = 0, run_capacity = 0, head_size = 0;
  };
  XrtCard() = default;
  absl::Status EnsureActivationBuffers(const A8Batch& x);
  void EnsureAttentionBuffers(AttentionBuffers& buffers, int items, int runs, int head_size, int bank);

  xrt::device device_;
  std::string platform_;
  std::vector<xrt::kernel> units_;  // one per accllm_w2a8 compute unit
  std::vector<xrt::kernel> attention_units_;  // one per accllm_kv4_attention compute unit
  xrt::bo kv_[4];                              // by KvRegion
  std::vector<AttentionBuffers> attention_buffers_;
  std::map<const uint8_t*, std::vector<StripeBuffers>> layers_;  // by the host copy's code pointer
  xrt::bo activations_, group_sums_, act_scales_;
  int64_t activation_bytes_ = 0;
  std::mutex mutex_;  // one step at a time on this card
  std::chrono::milliseconds run_timeout_{10000};
};

}  // namespace accllm::fpga
