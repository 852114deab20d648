#include "runtime/reference/reference_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/reference/forward.h"

namespace accllm {

ReferenceBackend::ReferenceBackend(const Model& model, int context_len, int max_sequences)
    : model_(model),
      context_len_(context_len > 0 ? context_len : model.config.max_seq_len),
      pool_(max_sequences * ((context_len_ + kPageTokens - 1) / kPageTokens)) {}

absl::Status ReferenceBackend::Run(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) {
  const LlamaConfig& c = model_.config;
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens");
  if (seq.length() + static_cast<int64_t>(tokens.size()) > context_len_) {
    return absl::OutOfRangeError(absl::StrCat("the sequence would exceed the context of ", context_len_, " tokens"));
  }
  for (int t : tokens) {
    if (t < 0 || t >= c.vocab_size) return absl::InvalidArgumentError(absl::StrCat("token id ", t, " is outside the vocabulary"));
  }
  RETURN_IF_ERROR(seq.Reserve(static_cast<int>(tokens.size())));
  if (!seq.backend_state()) seq.backend_state() = std::make_shared<RunState>(c, context_len_);
  RunState& state = *static_cast<RunState*>(seq.backend_state().get());
  std::span<const float> out;
  for (int t : tokens) {
    out = Forward(model_, state, t, static_cast<int>(seq.length()));
    seq.Advance(1);
  }
  std::copy(out.begin(), out.end(), logits.begin());
  return absl::OkStatus();
}

absl::Status ReferenceBackend::Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) {
  return Run(seq, tokens, logits);
}

absl::Status ReferenceBackend::Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens,
                                      std::span<float> logits) {
  if (seqs.size() != tokens.size()) return absl::InvalidArgumentError("one token per sequence");
  const std::size_t vocab = static_cast<std::size_t>(model_.config.vocab_size);
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    RETURN_IF_ERROR(Run(*seqs[i], tokens.subspan(i, 1), logits.subspan(i * vocab, vocab)));
  }
  return absl::OkStatus();
}

}  // namespace accllm
