// The fp32 reference forward pass behind the Backend interface: full attention over a
// contiguous per-sequence cache (RunState). It still takes pages from its pool, so that
// schedulers treat it like any other device.
#pragma once

#include "runtime/engine/backend.h"
#include "runtime/model/model.h"

namespace accllm {

class ReferenceBackend final : public Backend {
 public:
  // `context_len` 0: the model's trained context. Sequences cannot grow past it.
  explicit ReferenceBackend(const Model& model, int context_len = 0, int max_sequences = 8);

  std::string name() const override { return "reference(fp32)"; }
  const LlamaConfig& config() const override { return model_.config; }
  const LambdaConfig& lambda() const override { return lambda_; }
  int page_tokens() const override { return kPageTokens; }
  PagePool& page_pool() override { return pool_; }
  int max_step_tokens() const override { return context_len_; }
  int context_len() const { return context_len_; }

  absl::Status Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) override;
  absl::Status Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens,
                      std::span<float> logits) override;

 private:
  static constexpr int kPageTokens = 16;
  absl::Status Run(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits);

  const Model& model_;
  int context_len_;
  LambdaConfig lambda_;  // full attention
  PagePool pool_;
};

}  // namespace accllm
