// One U280 card through XRT's native API: opens the device, checks and loads the xclbin, uploads
// every W2 linear layer as stripes of row tiles into the HBM bank of each W2A8 compute unit (the
// bank comes from the unit's argument connectivity: kernel.group_id) with a stripe table per
// layer, keeps the KV cache in the attention units' banks, and runs each step whole on the layer
// sequencer: the step's tables and descriptor list in, one start, the logits out. Card faults come
// back as UNAVAILABLE (open, load) or INTERNAL (a run that fails or times out); the caller marks
// the card unhealthy.
#pragma once

#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_kernel.h>

#include <chrono>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/host/stripe_plan.h"
#include "fpga/step_program.h"
#include "runtime/cpu/step_plan.h"
#include "runtime/quant/w2.h"

namespace accllm::fpga {

// Cards XRT sees (0 when none, or when XRT cannot start).
int CountCards();

class XrtCard {
 public:
  static absl::StatusOr<std::unique_ptr<XrtCard>> Open(int index, const std::string& xclbin_path);
  // Stops the W2A8 and attention units (a sequencer start whose program is a stop).
  ~XrtCard();

  // Copies a W2 tensor to the card, striped over the W2A8 units, and its stripe table (the units'
  // buffer addresses, fpga/kernels/sequencer.h kW2A8) to the sequencer's bank.
  absl::Status Upload(const W2View& w);

  // The KV cache of `pages` pages, placed over the attention units' four KV channels (a buffer in
  // each, fpga/kernels/kv_channels.h) with the table the sequencer reads. Only the card touches it.
  absl::Status PlaceKv(const LlamaConfig& config, int page_tokens, int pages);

  // One step on the layer sequencer (the engine has planned it). The weights the step names that
  // are not W2 layers (embedding, norms, classifier: a W8 one striped like the W2 layers) are
  // copied to the card on first use.
  absl::Status RunStep(const StepPlan& plan, std::span<float> logits);

  int units() const { return static_cast<int>(units_.size()); }
  CardUnits card_units() const { return {units(), static_cast<int>(attention_units_.size())}; }
  const std::string& platform() const { return platform_; }

  // Exposed for tests: the memory bank (group id) of a unit's argument, and of KV channel c.
  int BankOf(int unit, int arg) const { return units_.at(unit).group_id(arg); }
  int KvBankOf(int channel) const { return kv_banks_[channel]; }

 private:
  struct StripeBuffers {  // one unit's share of a layer, on the card (dense: no index; W8: codes and scales)
    xrt::bo codes, index, scales, zeros;
  };
  struct LayerOnCard {
    std::vector<StripeBuffers> stripes;
    xrt::bo stripe_table;
  };
  struct DeviceArray {  // a card buffer that grows to the largest size asked of it
    xrt::bo bo;
    int64_t capacity = 0;
  };
  XrtCard() = default;
  // A buffer in `bank` holding `bytes` from `data`, synced to the card.
  xrt::bo CopyToCard(const void* data, int64_t bytes, int bank);
  // The device address of `array`, grown to `bytes` (its contents are undefined).
  uint64_t Reserve(DeviceArray& array, int64_t bytes);
  // The device address of `array` holding `bytes` from `data`, synced to the card.
  uint64_t Stage(DeviceArray& array, const void* data, int64_t bytes);
  absl::Status EnsureStepWeights(const EngineWeights& weights);
  // Starts the W2A8 and attention units, which then serve the sequencer's commands until a stop
  // (fpga/kernels/unit_chain.h); at the first step, when the KV channels exist.
  void StartUnits();
  // A start of the sequencer on `count` descriptors.
  xrt::run StartSequencer(const xrt::bo& program, int count);
  // The shared masters `masters` of `run` set to the shared anchor, and its address at `base_arg`.
  void SetShared(xrt::run& run, std::initializer_list<int> masters, int base_arg);

  xrt::device device_;
  std::string platform_;
  std::vector<xrt::kernel> units_;  // one per accllm_w2a8 compute unit
  std::vector<xrt::kernel> attention_units_;
  xrt::kernel sequencer_;
  std::vector<xrt::run> unit_runs_;     // the units, running from the first step to the stop
  std::vector<xrt::bo> weight_anchors_;  // per W2A8 unit, the buffer its weight masters are set to
  xrt::bo shared_anchor_;               // the buffer every shared master is set to
  int kv_banks_[4] = {}, step_bank_ = 0;
  xrt::bo kv_channels_[4], kv_table_;
  std::map<const uint8_t*, LayerOnCard> layers_;  // W2 layers and the W8 classifier, by the host copy's codes
  std::map<const void*, xrt::bo> step_weights_;   // embedding, norms, classifier, by host pointer
  // The step's activations, tables and descriptor list.
  std::map<std::string, DeviceArray> step_arrays_;
  std::mutex mutex_;  // one step at a time on this card
  std::chrono::milliseconds run_timeout_{10000};
};

}  // namespace accllm::fpga
