// What happens to one sequence's logits at each step: sampling, stop conditions and streaming
// detokenization. The Generator drives one stream in a loop; the scheduler drives many, one step
// at a time each.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/generate/generation_options.h"
#include "runtime/generate/logprobs.h"
#include "runtime/generate/stop_strings.h"
#include "runtime/sampling/sampler.h"
#include "runtime/tokenizer/stream_detokenizer.h"

namespace accllm {

// Checks a request before any work is done: ids in the vocabulary, room to generate within
// `max_length`, sane limits, stop conditions and sampling parameters.
absl::Status ValidateGenerationRequest(std::span<const int> prompt_ids, const GenerationOptions& options,
                                       int vocab_size, int max_length);

class TokenStream {
 public:
  // note: call only with a request that passed ValidateGenerationRequest.
  TokenStream(const Tokenizer& tokenizer, std::span<const int> prompt_ids, const GenerationOptions& options,
              int max_length);

  struct Step {
    int token;
    std::string text;                    // text that became final with this token (may be empty)
    std::optional<FinishReason> finish;  // set when the sequence ends with this token
    std::optional<TokenLogprobs> logprobs;  // when options.logprobs >= 0
  };
  // Samples the next token from `logits` (modified in place) and applies the stop conditions.
  Step Next(std::span<float> logits);

  const std::vector<int>& generated() const { return generated_; }
  const std::vector<int>& history() const { return history_; }  // prompt + generated
  const std::string& text() const { return text_; }
  int length() const { return static_cast<int>(history_.size()); }  // prompt + generated

 private:
  const Tokenizer& tokenizer_;
  GenerationOptions options_;
  int max_length_;
  Sampler sampler_;
  StreamDetokenizer detokenizer_;
  StopStringMatcher stop_strings_;
  std::vector<int> history_;
  std::vector<int> generated_;
  std::string text_;
  std::vector<float> raw_logits_;
};

}  // namespace accllm
