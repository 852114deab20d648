#include "fpga/sim/fpga_sim_backend.h"

#include <memory>

#include "fpga/device_limits.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/sim/sequenced_step.h"

namespace accllm::fpga {
namespace {

// A simulated card fault for testing what the server does when a card dies mid-stream: after
// `steps` Prefill/Decode calls every call fails, as a card whose runs time out would.
class FaultAfter final : public Backend {
 public:
  FaultAfter(std::unique_ptr<Backend> inner, int steps) : inner_(std::move(inner)), left_(steps) {}
  std::string name() const override { return inner_->name(); }
  const LlamaConfig& config() const override { return inner_->config(); }
  const LambdaConfig& lambda() const override { return inner_->lambda(); }
  int page_tokens() const override { return inner_->page_tokens(); }
  PagePool& page_pool() override { return inner_->page_pool(); }
  int max_step_tokens() const override { return inner_->max_step_tokens(); }
  int max_attention_span() const override { return inner_->max_attention_span(); }
  absl::Status Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) override {
    if (absl::Status s = Tick(); !s.ok()) return s;
    return inner_->Prefill(seq, tokens, logits);
  }
  absl::Status Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens, std::span<float> logits) override {
    if (absl::Status s = Tick(); !s.ok()) return s;
    return inner_->Decode(seqs, tokens, logits);
  }

 private:
  absl::Status Tick() {
    if (left_ == 0) return absl::InternalError("fpga-sim: simulated card fault (a run timed out)");
    --left_;
    return absl::OkStatus();
  }
  std::unique_ptr<Backend> inner_;
  int left_;
};

static_assert(sizeof(hls::Kv4Param) == sizeof(Kv4Params), "KV4 parameters differ between host and kernel");

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeFpgaSimBackend(const BackendOptions& options, const AnyModel& model) {
  if (!model.packed) {
    return absl::InvalidArgumentError(
        "the FPGA runs packed W2A8KV4 models only; make one with `accllm quantize` (this model is fp32)");
  }
  if (options.kv != "kv4") return absl::InvalidArgumentError("the FPGA keeps its KV cache in KV4 (not --kv f32)");
  // The simulated card is a U280: the same units and the same KV banks as a real one.
  if (absl::Status s = CheckModelFitsUnits(model.packed->config, model.packed->linears); !s.ok()) return s;
  absl::StatusOr<int> kv_pages = KvPagesForCard(options, model.packed->config);
  if (!kv_pages.ok()) return kv_pages.status();
  BackendOptions sim = options;
  sim.kv_pages = *kv_pages;
  sim.max_attention_span = kMaxAttentionSpan;
  sim.engine = "cpu";
  sim.label = "fpga-sim";
  // The KV cache lives in the simulated card's memory, and each step runs there whole: one start
  // of the C-simulated layer sequencer (sequenced_step.h).
  auto step = std::make_shared<SimSequencedStep>(model.packed->config, options.max_step_tokens, sim.kv_pages,
                                                 options.page_tokens);
  sim.step_offload = [step](const StepPlan& plan, std::span<float> logits) {
    if (absl::Status fits = FitsAttentionUnit(*plan.attention); !fits.ok()) return fits;
    return step->Run(plan, logits);
  };
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(sim, model);
  if (!backend.ok() || options.sim_fault_after_steps <= 0) return backend;
  return std::unique_ptr<Backend>(new FaultAfter(std::move(*backend), options.sim_fault_after_steps));
}

}  // namespace accllm::fpga
