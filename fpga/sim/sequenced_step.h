// fpga-sim's steps on the C-simulated card: the engine plans each step (block tables, Λ runs),
// this writes the plan's tables into the card's memory, builds the step's descriptor list
// (fpga/step_program.h) and starts the C-simulated sequencer once; the logits are the only
// read-back. In C simulation a device address is a host address, so the weights are used where
// the model keeps them.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "fpga/kernels/kv_channels.h"
#include "runtime/common/aligned_buffer.h"
#include "runtime/cpu/step_plan.h"
#include "runtime/model/llama_config.h"

namespace accllm::fpga {

class SimSequencedStep {
 public:
  // Scratch for steps of up to max_step_tokens tokens of a model of this shape, and a KV cache of
  // kv_pages pages placed over the simulated card's four KV channels as a card places it.
  SimSequencedStep(const LlamaConfig& config, int max_step_tokens, int kv_pages, int page_tokens);

  absl::Status Run(const StepPlan& plan, std::span<float> logits);

 private:
  // A W2 layer's stripe table (sequencer.h, kW2A8), made on first use: every unit's stripe read
  // in place from the model's arrays, where a card has its own copy in each unit's channel.
  uint64_t StripeTable(const W2View& layer);
  uint64_t StripeTable(const W8View& classifier);  // the same for the W8 classifier (kW8A8)

  LlamaConfig config_;
  AlignedBuffer kv_channels_[hls::kKvChannels];
  hls::KvChannelTable kv_table_{};
  // The card's activation buffers, [token][width].
  std::vector<float> x_, y_, q_, q_raw_, k_, v_, att_, h_, h2_, queries_, sink_queries_, normalized_, logits_;
  std::vector<int8_t> a8_codes_;
  std::vector<int32_t> a8_group_sums_;
  std::vector<float> a8_scales_;
  // The step's tables.
  std::vector<int32_t> tokens_, logit_rows_;
  std::map<const uint8_t*, std::vector<uint64_t>> stripe_tables_;  // by the tensor's codes
};

}  // namespace accllm::fpga
