#include "fpga/host/xrt_backend.h"

#include "absl/strings/str_cat.h"
#include "fpga/device_limits.h"
#include "fpga/host/xrt_card.h"

namespace accllm::fpga {

absl::StatusOr<std::unique_ptr<Backend>> MakeXrtBackend(const BackendOptions& options, const AnyModel& model) {
  if (!model.packed) {
    return absl::InvalidArgumentError(
        "the FPGA runs packed W2A8KV4 models only; make one with `accllm quantize` (this model is fp32)");
  }
  if (options.xclbin.empty()) return absl::InvalidArgumentError("an FPGA device needs --xclbin (the accelerator image)");
  if (options.kv != "kv4") return absl::InvalidArgumentError("the FPGA keeps its KV cache in KV4 (not --kv f32)");
  if (absl::Status s = CheckModelFitsUnits(model.packed->config, model.packed->linears); !s.ok()) return s;
  absl::StatusOr<int> kv_pages = KvPagesForCard(options, model.packed->config);
  if (!kv_pages.ok()) return kv_pages.status();
  absl::StatusOr<std::unique_ptr<XrtCard>> opened = XrtCard::Open(options.device_index, options.xclbin);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<XrtCard> card = std::move(*opened);
  for (const auto& [id, w2] : model.packed->linears) {
    if (absl::Status s = card->Upload(w2); !s.ok()) return s;
  }
  if (absl::Status s = card->PlaceKv(model.packed->config, options.page_tokens, *kv_pages); !s.ok()) return s;
  BackendOptions engine = options;
  engine.engine = "cpu";
  engine.label = absl::StrCat("fpga", options.device_index, "/xrt");
  // The KV cache in the card's HBM, and every step run there whole by the layer sequencer; the
  // engine plans the steps (block tables, Λ runs) and checks them.
  engine.kv_pages = *kv_pages;
  engine.max_attention_span = kMaxAttentionSpan;
  engine.step_offload = [card](const StepPlan& plan, std::span<float> logits) -> absl::Status {
    if (absl::Status fits = FitsAttentionUnit(*plan.attention); !fits.ok()) return fits;
    return card->RunStep(plan, logits);
  };
  return MakeBackend(engine, model);
}

}  // namespace accllm::fpga
