#include "fpga/sim/sequenced_step.h"

#include <algorithm>
#include <cstring>

#include "fpga/device_limits.h"
#include "fpga/host/stripe_plan.h"
#include "fpga/kernels/sequencer.h"
#include "fpga/step_program.h"
#include "runtime/common/status_macros.h"
#include "runtime/quant/w2.h"

namespace accllm::fpga {
namespace {

// The W2A8 compute units each linear layer is striped over, and the attention units
// (fpga/build/u280.cfg).
constexpr int kW2A8Units = 24;
constexpr int kAttentionUnits = 2;

template <typename T>
uint64_t Address(const T* p) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
}

}  // namespace

SimSequencedStep::SimSequencedStep(const LlamaConfig& c, int max_step_tokens, int kv_pages, int page_tokens)
    : config_(c) {
  const KvPlacement placement = PlaceKv(c, page_tokens, kv_pages);
  uint64_t channels[hls::kKvChannels];
  for (int ch = 0; ch < hls::kKvChannels; ++ch) {
    kv_channels_[ch] = AlignedBuffer(static_cast<std::size_t>(placement.channel_bytes));
    channels[ch] = Address(kv_channels_[ch].data());
  }
  kv_table_ = placement.Table(channels);
  const std::size_t n = static_cast<std::size_t>(max_step_tokens);
  for (std::vector<float>* buffer : {&x_, &y_, &q_, &q_raw_, &att_, &queries_, &sink_queries_, &normalized_}) {
    buffer->resize(n * c.dim);
  }
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  h_.resize(n * c.hidden_dim);
  h2_.resize(n * c.hidden_dim);
  logits_.resize(n * c.vocab_size);
  // The widest A8 input (the FFN's hidden vector), padded to the largest group size (1024), and a
  // group sum for every 32 columns (the smallest group size).
  const std::size_t cols = static_cast<std::size_t>(std::max(c.dim, c.hidden_dim) + 1023) / 1024 * 1024;
  a8_codes_.resize(n * cols);
  a8_group_sums_.resize(n * cols / 32);
  a8_scales_.resize(n);
}

uint64_t SimSequencedStep::StripeTable(const W2View& w) {
  std::vector<uint64_t>& table = stripe_tables_[w.codes];
  if (table.empty()) {
    for (const Stripe& s : PlanStripes(w.shape, kW2A8Units)) {
      table.push_back(Address(w.codes + s.code_offset));
      table.push_back(w.sparse_index != nullptr ? Address(w.sparse_index + s.code_offset) : 0);
      table.push_back(Address(w.scales + s.param_offset));
      table.push_back(Address(w.zeros + s.param_offset));
    }
  }
  return Address(table.data());
}

uint64_t SimSequencedStep::StripeTable(const W8View& w) {
  std::vector<uint64_t>& table = stripe_tables_[reinterpret_cast<const uint8_t*>(w.codes)];
  if (table.empty()) {
    for (const Stripe& s : PlanStripes(w.shape, kW2A8Units)) {
      table.push_back(Address(w.codes + s.code_offset));
      table.push_back(Address(w.scales + s.param_offset));
    }
  }
  return Address(table.data());
}

absl::Status SimSequencedStep::Run(const StepPlan& plan, std::span<float> logits) {
  const int n = static_cast<int>(plan.tokens.size());
  if (static_cast<std::size_t>(n) * config_.dim > x_.size()) return absl::InvalidArgumentError("the step has too many tokens");
  tokens_.assign(plan.tokens.begin(), plan.tokens.end());
  logit_rows_.assign(plan.logit_tokens.begin(), plan.logit_tokens.end());
  const AttentionBatch& runs = *plan.attention;
  StepBuffers b;
  b.x = Address(x_.data());
  b.y = Address(y_.data());
  b.q = Address(q_.data());
  b.q_raw = Address(q_raw_.data());
  b.k = Address(k_.data());
  b.v = Address(v_.data());
  b.att = Address(att_.data());
  b.h = Address(h_.data());
  b.h2 = Address(h2_.data());
  b.queries = Address(queries_.data());
  b.sink_queries = Address(sink_queries_.data());
  b.normalized = Address(normalized_.data());
  b.logits = Address(logits_.data());
  b.a8_codes = Address(a8_codes_.data());
  b.a8_group_sums = Address(a8_group_sums_.data());
  b.a8_scales = Address(a8_scales_.data());
  b.tokens = Address(tokens_.data());
  b.positions = Address(plan.positions.data());
  b.kv_vectors = Address(plan.kv_vectors.data());
  b.sink_positions = Address(plan.sink_positions.data());
  b.logit_rows = Address(logit_rows_.data());
  b.item_runs = Address(runs.item_runs.data());
  b.item_sink_runs = Address(runs.item_sink_runs.data());
  b.run_start = Address(runs.run_start.data());
  b.run_count = Address(runs.run_count.data());
  b.kv_table = Address(&kv_table_);
  ASSIGN_OR_RETURN(std::vector<hls::StepDescriptor> program,
                   BuildStepProgram(plan, b,
                                    {[](const void* host) { return Address(host); },
                                     [this](const W2View& layer) { return StripeTable(layer); },
                                     [this](const W8View& classifier) { return StripeTable(classifier); }},
                                    {kW2A8Units, kAttentionUnits}));
  hls::RunSequencerInCSim(program.data(), static_cast<int>(program.size()));
  const std::size_t values = logit_rows_.size() * static_cast<std::size_t>(config_.vocab_size);
  std::memcpy(logits.data(), logits_.data(), values * sizeof(float));
  return absl::OkStatus();
}

}  // namespace accllm::fpga
