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
  if (absl::Status s = CheckModelFitsUnits(model.packed->config, model.packed->linears); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<XrtCard>> opened = XrtCard::Open(options.device_index, options.xclbin);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<XrtCard> card = std::move(*opened);
  for (const auto& [id, w2] : model.packed->linears) {
    if (absl::Status s = card->Upload(w2); !s.ok()) return s;
  }
  BackendOptions engine = options;
  engine.engine = "cpu";
  engine.label = absl::StrCat("fpga", options.device_index, "/xrt");
  engine.w2a8_offload = [card](const W2View& w, const A8Batch& x, float* y, int64_t ldy) {
    return card->MatMul(w, x, y, ldy);
  };
  if (card->attention_units() > 0) {  // the KV cache in HBM, attention on the card
    if (options.kv != "kv4") return absl::InvalidArgumentError("the FPGA keeps its KV cache in KV4 (not --kv f32)");
    absl::StatusOr<int> kv_pages = KvPagesForCard(options, model.packed->config);
    if (!kv_pages.ok()) return kv_pages.status();
    engine.kv_pages = *kv_pages;
    engine.max_attention_span = kMaxAttentionSpan;
    engine.kv_allocator = [card](KvRegion region, int64_t bytes) { return card->AllocateKv(region, bytes); };
    engine.attention_offload = [card](const AttentionBatch& b, float* out) -> absl::Status {
      if (absl::Status fits = FitsAttentionUnit(b); !fits.ok()) return fits;
      return card->Attention(b, out);
    };
  }
  return MakeBackend(engine, model);
}

}  // namespace accllm::fpga
