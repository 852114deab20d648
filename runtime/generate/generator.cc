#include "runtime/generate/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/generate/stop_strings.h"
#include "runtime/tokenizer/stream_detokenizer.h"
#include "runtime/tokenizer/utf8.h"

namespace accllm {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kMaxTokens: return "max_tokens";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kContextFull: return "context_full";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<Generator>> Generator::Create(Backend& backend, const Tokenizer& tokenizer,
                                                             int max_length) {
  const LlamaConfig& config = backend.config();
  if (tokenizer.vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", tokenizer.vocab_size(),
                                                   " tokens but the model only ", config.vocab_size));
  }
  if (max_length < 0) return absl::InvalidArgumentError("the maximum length must be >= 0");
  if (max_length == 0) max_length = config.max_seq_len;
  return std::unique_ptr<Generator>(new Generator(backend, tokenizer, max_length));
}

absl::Status Generator::Validate(std::span<const int> prompt_ids, const GenerationOptions& options) const {
  RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  if (options.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 1, got ", options.max_new_tokens));
  }
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens (not even BOS)");
  if (static_cast<int64_t>(prompt_ids.size()) >= max_length_) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_ids.size(),
                                                   " tokens; the context holds ", max_length_,
                                                   ", leaving no room to generate"));
  }
  const int vocab = backend_.config().vocab_size;
  for (int id : prompt_ids) {
    if (id < 0 || id >= vocab) return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  }
  for (int id : options.stop_token_ids) {
    if (id < 0 || id >= vocab) return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  }
  for (const std::string& stop : options.stop_strings) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    if (!IsValidUtf8(stop)) return absl::InvalidArgumentError("stop strings must be valid UTF-8");
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationResult> Generator::Generate(std::string_view prompt,
                                                     const GenerationOptions& options,
                                                     const TokenCallback& on_token) const {
  if (!IsValidUtf8(prompt)) return absl::InvalidArgumentError("the prompt is not valid UTF-8");
  ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer_.Encode(prompt, /*add_bos=*/true));
  return Generate(ids, options, on_token);
}

absl::StatusOr<GenerationResult> Generator::Generate(std::span<const int> prompt_ids,
                                                     const GenerationOptions& options,
                                                     const TokenCallback& on_token) const {
  RETURN_IF_ERROR(Validate(prompt_ids, options));
  GenerationResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());

  const std::unique_ptr<SequenceKv> seq = backend_.NewSequence();
  Sampler sampler(options.sampling);
  StreamDetokenizer detokenizer(tokenizer_, prompt_ids.back());
  StopStringMatcher stop_strings(options.stop_strings);
  std::vector<int> history(prompt_ids.begin(), prompt_ids.end());
  std::vector<float> out(static_cast<std::size_t>(backend_.config().vocab_size));
  std::vector<float> logits(out.size());

  // Prompt: in chunks the backend accepts; the last token's logits predict the first new one.
  const auto prompt_start = std::chrono::steady_clock::now();
  for (std::size_t begin = 0; begin < prompt_ids.size(); begin += backend_.max_step_tokens()) {
    const std::size_t count = std::min<std::size_t>(backend_.max_step_tokens(), prompt_ids.size() - begin);
    RETURN_IF_ERROR(backend_.Prefill(*seq, prompt_ids.subspan(begin, count), out));
  }
  int pos = static_cast<int>(prompt_ids.size());
  result.prompt_seconds = SecondsSince(prompt_start);

  const auto generate_start = std::chrono::steady_clock::now();
  for (;;) {
    std::copy(out.begin(), out.end(), logits.begin());
    const int next = sampler.Sample(logits, history);
    result.generated_ids.push_back(next);
    history.push_back(next);

    std::optional<FinishReason> finish;
    std::string text;
    if (!options.ignore_eos && (next == tokenizer_.eos_id() || next == tokenizer_.bos_id())) {
      finish = FinishReason::kEos;
    } else if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), next) !=
               options.stop_token_ids.end()) {
      finish = FinishReason::kStopToken;
    } else {
      text = detokenizer.Push(next);
      if (static_cast<int>(result.generated_ids.size()) == options.max_new_tokens) {
        finish = FinishReason::kMaxTokens;
      } else if (pos + 1 >= max_length_) {
        finish = FinishReason::kContextFull;  // `next` would be the last position that fits
      }
    }
    if (finish) text += detokenizer.Flush();
    StopStringMatcher::Result emitted = stop_strings.Push(text, finish.has_value());
    if (emitted.stopped) finish = FinishReason::kStopString;
    result.text += emitted.text;
    if (on_token && !on_token(next, emitted.text) && !finish) finish = FinishReason::kCancelled;
    if (finish) {
      result.finish_reason = *finish;
      break;
    }
    SequenceKv* const seqs[] = {seq.get()};
    RETURN_IF_ERROR(backend_.Decode(seqs, {&next, 1}, out));
    ++pos;
  }
  result.generate_seconds = SecondsSince(generate_start);
  return result;
}

}  // namespace accllm
