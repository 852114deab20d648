// Picks the next token from logits: repetition penalty, then greedy (temperature 0) or
// temperature + top-k + top-p + min-p filtering and a seeded draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace accllm {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;                    // keep the k most likely tokens; 0 = off
  float top_p = 1.0f;               // keep the smallest set with probability >= top_p; 1 = off
  float min_p = 0.0f;               // drop tokens below min_p * p(most likely); 0 = off
  float repetition_penalty = 1.0f;  // > 1 discourages tokens in the recent window; 1 = off
  int repetition_window = 64;       // how many recent tokens the penalty looks at
  uint64_t seed = 0;
};

// Rejects out-of-range values with a message naming the parameter.
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  // note: call only with parameters that passed ValidateSamplingParams.
  explicit Sampler(const SamplingParams& params);

  // `logits` (vocab_size) is modified in place. `history` is the sequence so far (prompt and
  // generated tokens); its last repetition_window tokens are penalised.
  int Sample(std::span<float> logits, std::span<const int> history);

 private:
  struct Candidate {
    int id;
    float p;
  };

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;  // reused between calls
};

}  // namespace accllm
