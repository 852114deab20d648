// What a caller asks of one generation, and how it can end.
#pragma once

#include <string>
#include <vector>

#include "runtime/sampling/sampler.h"

namespace accllm {

enum class FinishReason {
  kMaxTokens,    // max_new_tokens reached
  kEos,          // the model produced EOS (or BOS, which also ends a document)
  kStopString,   // a stop string appeared; the text ends right before it
  kStopToken,    // a token from stop_token_ids was produced
  kContextFull,  // the sequence filled its maximum length
  kCancelled,    // the caller asked to stop
  kTimeLimit,    // the request's deadline passed
  kError,        // the device failed
};
const char* FinishReasonName(FinishReason reason);

// Bounds on what one request may ask for: stop strings are matched against every new piece of
// text, so their number and length are capped.
inline constexpr int kMaxStopStrings = 16;
inline constexpr int kMaxStopStringBytes = 256;
inline constexpr int kMaxStopTokenIds = 64;

struct GenerationOptions {
  SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<std::string> stop_strings;
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  int logprobs = -1;  // -1: none; n >= 0: the sampled token's log-probability and the n likeliest
};

}  // namespace accllm
