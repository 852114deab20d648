// The generation loop for one sequence on any Backend: prompt prefill, sampling, stop conditions
// and streaming text.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/generate/generation_options.h"
#include "runtime/sampling/sampler.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

struct GenerationResult {
  std::vector<int> prompt_ids;     // as evaluated (BOS included)
  std::vector<int> generated_ids;  // includes a terminating EOS / stop token
  std::string text;                // the generated text (no prompt, no stop string)
  FinishReason finish_reason = FinishReason::kMaxTokens;
  double prompt_seconds = 0;
  double generate_seconds = 0;
};

// Called once per generated token with the text that became final with it (possibly empty; the
// last call also carries any text held back until the end). Return false to cancel.
using TokenCallback = std::function<bool(int token, std::string_view text)>;

class Generator {
 public:
  // `max_length` bounds prompt + generated tokens; 0 means the model's trained context.
  static absl::StatusOr<std::unique_ptr<Generator>> Create(Backend& backend,
                                                           const Tokenizer& tokenizer,
                                                           int max_length = 0);

  absl::StatusOr<GenerationResult> Generate(std::span<const int> prompt_ids,
                                            const GenerationOptions& options,
                                            const TokenCallback& on_token = nullptr) const;

  // Encodes `prompt` (with BOS) and generates.
  absl::StatusOr<GenerationResult> Generate(std::string_view prompt,
                                            const GenerationOptions& options,
                                            const TokenCallback& on_token = nullptr) const;

  int max_length() const { return max_length_; }

 private:
  Generator(Backend& backend, const Tokenizer& tokenizer, int max_length)
      : backend_(backend), tokenizer_(tokenizer), max_length_(max_length) {}

  Backend& backend_;
  const Tokenizer& tokenizer_;
  int max_length_;
};

}  // namespace accllm
