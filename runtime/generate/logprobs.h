// Log-probabilities of a sampled token and of the model's most likely alternatives, taken from
// the raw logits (the model's own distribution: before temperature, penalties and truncation).
#pragma once

#include <span>
#include <vector>

namespace accllm {

inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprobs {
  struct Alternative {
    int token;
    float logprob;
  };
  float logprob = 0;             // of the sampled token
  std::vector<Alternative> top;  // most likely first; ties by lower id
};

// note: `top_n` in [0, min(kMaxTopLogprobs, logits.size())].
TokenLogprobs ComputeLogprobs(std::span<const float> logits, int chosen, int top_n);

}  // namespace accllm
