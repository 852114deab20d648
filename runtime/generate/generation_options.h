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

struct GenerationOptions {
  SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<std::string> stop_strings;
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  int logprobs = -1;  // -1: none; n >= 0: the sampled token's log-probability and the n likeliest
};

}  // namespace accllm
