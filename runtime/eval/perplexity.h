// Perplexity of a backend on token sequences, with the negative log-likelihood also collected
// per position bucket (to see quality change with distance into a long sequence).
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"

namespace accllm {

struct PerplexityResult {
  double nll = 0;  // sum over scored tokens
  int64_t tokens = 0;
  std::vector<double> bucket_nll;  // per bucket of positions
  std::vector<int64_t> bucket_tokens;

  double perplexity() const;
  double bucket_perplexity(std::size_t bucket) const;
  void Add(const PerplexityResult& other);
};

// Scores each token of `sequence` after the first given its prefix, one decode step at a time.
absl::StatusOr<PerplexityResult> Perplexity(Backend& backend, std::span<const int> sequence, int bucket_size);

}  // namespace accllm
