#include "runtime/generate/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/generate/token_stream.h"
#include "runtime/tokenizer/utf8.h"

namespace accllm {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

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
  RETURN_IF_ERROR(ValidateGenerationRequest(prompt_ids, options, backend_.config().vocab_size, max_length_));
  GenerationResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());

  const std::unique_ptr<SequenceKv> seq = backend_.NewSequence();
  TokenStream stream(tokenizer_, prompt_ids, options, max_length_);
  std::vector<float> logits(static_cast<std::size_t>(backend_.config().vocab_size));

  // Prompt: in chunks the backend accepts; the last token's logits predict the first new one.
  const auto prompt_start = std::chrono::steady_clock::now();
  for (std::size_t begin = 0; begin < prompt_ids.size(); begin += backend_.max_step_tokens()) {
    const std::size_t count = std::min<std::size_t>(backend_.max_step_tokens(), prompt_ids.size() - begin);
    RETURN_IF_ERROR(backend_.Prefill(*seq, prompt_ids.subspan(begin, count), logits));
  }
  result.prompt_seconds = SecondsSince(prompt_start);

  const auto generate_start = std::chrono::steady_clock::now();
  for (;;) {
    TokenStream::Step step = stream.Next(logits);
    if (on_token && !on_token(step.token, step.text) && !step.finish) step.finish = FinishReason::kCancelled;
    if (step.finish) {
      result.finish_reason = *step.finish;
      break;
    }
    SequenceKv* const seqs[] = {seq.get()};
    RETURN_IF_ERROR(backend_.Decode(seqs, {&step.token, 1}, logits));
  }
  result.generated_ids = stream.generated();
  result.text = stream.text();
  result.generate_seconds = SecondsSince(generate_start);
  return result;
}

}  // namespace accllm
