#include "runtime/generate/token_stream.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/tokenizer/utf8.h"

namespace accllm {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kMaxTokens: return "max_tokens";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kContextFull: return "context_full";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kError: return "error";
  }
  return "?";
}

absl::Status ValidateGenerationRequest(std::span<const int> prompt_ids, const GenerationOptions& options,
                                       int vocab, int max_length) {
  RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  if (options.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", options.max_new_tokens));
  }
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens (not even BOS)");
  if (static_cast<int64_t>(prompt_ids.size()) >= max_length) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_ids.size(), " tokens; the context holds ",
                                                   max_length, ", leaving no room to generate"));
  }
  for (int id : prompt_ids) {
    if (id < 0 || id >= vocab) return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  }
  if (options.logprobs < -1 || options.logprobs > std::min(kMaxTopLogprobs, vocab)) {
    return absl::InvalidArgumentError(absl::StrCat("top logprobs must be in [0, ", std::min(kMaxTopLogprobs, vocab),
                                                   "], got ", options.logprobs));
  }
  if (options.stop_token_ids.size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.stop_token_ids.size(), " stop token ids given; at most ", kMaxStopTokenIds));
  }
  if (options.stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.stop_strings.size(), " stop strings given; at most ", kMaxStopStrings));
  }
  for (int id : options.stop_token_ids) {
    if (id < 0 || id >= vocab) return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  }
  for (const std::string& stop : options.stop_strings) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    if (stop.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("a stop string has ", stop.size(), " bytes; at most ", kMaxStopStringBytes));
    }
    if (!IsValidUtf8(stop)) return absl::InvalidArgumentError("stop strings must be valid UTF-8");
  }
  return absl::OkStatus();
}

TokenStream::TokenStream(const Tokenizer& tokenizer, std::span<const int> prompt_ids, const GenerationOptions& options,
                         int max_length)
    : tokenizer_(tokenizer),
      options_(options),
      max_length_(max_length),
      sampler_(options.sampling),
      detokenizer_(tokenizer, prompt_ids.back()),
      stop_strings_(options.stop_strings),
      history_(prompt_ids.begin(), prompt_ids.end()) {}

TokenStream::Step TokenStream::Next(std::span<float> logits) {
  if (options_.logprobs >= 0) raw_logits_.assign(logits.begin(), logits.end());  // sampling edits logits
  Step step{sampler_.Sample(logits, history_), "", std::nullopt, std::nullopt};
  const int next = step.token;
  if (options_.logprobs >= 0) step.logprobs = ComputeLogprobs(raw_logits_, next, options_.logprobs);
  generated_.push_back(next);
  history_.push_back(next);

  std::string text;
  if (!options_.ignore_eos && (next == tokenizer_.eos_id() || next == tokenizer_.bos_id())) {
    step.finish = FinishReason::kEos;
  } else if (std::find(options_.stop_token_ids.begin(), options_.stop_token_ids.end(), next) !=
             options_.stop_token_ids.end()) {
    step.finish = FinishReason::kStopToken;
  } else {
    text = detokenizer_.Push(next);
    if (static_cast<int>(generated_.size()) == options_.max_new_tokens) {
      step.finish = FinishReason::kMaxTokens;
    } else if (length() >= max_length_) {
      step.finish = FinishReason::kContextFull;  // `next` is the last position that fits
    }
  }
  if (step.finish) text += detokenizer_.Flush();
  StopStringMatcher::Result emitted = stop_strings_.Push(text, step.finish.has_value());
  if (emitted.stopped) step.finish = FinishReason::kStopString;
  step.text = std::move(emitted.text);
  text_ += step.text;
  return step;
}

}  // namespace accllm
