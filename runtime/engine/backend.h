// The one interface every device implements (fp32 reference, CPU W2A8KV4 engine, FPGA),
// shaped for continuous batching: the scheduler owns each sequence's block table (SequenceKv,
// with pages from the backend's pool) and asks the backend to run prefill chunks and batched
// decode steps over them.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "runtime/kv/lambda_attention.h"
#include "runtime/kv/page_pool.h"
#include "runtime/kv/sequence_kv.h"
#include "runtime/model/llama_config.h"

namespace accllm {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual const LlamaConfig& config() const = 0;
  virtual const LambdaConfig& lambda() const = 0;
  virtual int page_tokens() const = 0;
  virtual PagePool& page_pool() = 0;
  // Most tokens one Prefill or Decode call may carry in all.
  virtual int max_step_tokens() const = 0;
  // Most tokens one query may attend to (sinks + window, or the whole sequence under full
  // attention); 0: no limit. A device with fixed on-chip buffers has one, and requests whose
  // attention would exceed it must not be placed on it.
  virtual int max_attention_span() const { return 0; }

  // A new, empty sequence whose pages come from this backend's pool.
  std::unique_ptr<SequenceKv> NewSequence() {
    return std::make_unique<SequenceKv>(page_pool(), page_tokens(), lambda());
  }

  // Errors of Prefill and Decode: INVALID_ARGUMENT and OUT_OF_RANGE mean the step asked for more
  // than the device can do (a limit the scheduler's admission checks, so unreachable in serving);
  // the device itself is fine. Any other code is a device fault: the device is taken out of use.
  //
  // Appends `tokens` (a prefill chunk) to `seq` and writes the logits that follow the last of
  // them into `logits` (vocab_size floats). On ResourceExhausted (no pages) nothing changed.
  virtual absl::Status Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) = 0;

  // Prefill that keeps the logits after every token: logits[i * vocab_size, ...) follow tokens[i]
  // (tokens.size() * vocab_size floats). What scoring text needs (perplexity, prompt logprobs).
  // This default runs one token per step; engines that batch a chunk override it.
  virtual absl::Status PrefillEveryLogit(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) {
    const std::size_t vocab = static_cast<std::size_t>(config().vocab_size);
    if (logits.size() < tokens.size() * vocab) return absl::InvalidArgumentError("the logits buffer is too small");
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (absl::Status s = Prefill(seq, tokens.subspan(i, 1), logits.subspan(i * vocab, vocab)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // One decode step: appends tokens[i] to *seqs[i] and writes its logits to
  // logits[i * vocab_size, (i + 1) * vocab_size). On ResourceExhausted no token was processed;
  // sequences before the one that did not fit may keep the page they reserved (they use it on
  // their next step). Admission control is meant to make this unreachable.
  virtual absl::Status Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens,
                              std::span<float> logits) = 0;
};

}  // namespace accllm
