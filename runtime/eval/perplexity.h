// Perplexity of a backend on token sequences, with the negative log-likelihood also collected
// per position bucket (to see quality change with distance into a long sequence).
#pragma once

#include <functional>
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

// Scores each token of `sequence` after the first given its prefix, as one sequence fed in prefill
// steps of the backend's largest size.
absl::StatusOr<PerplexityResult> Perplexity(Backend& backend, std::span<const int> sequence, int bucket_size);

// llama.cpp's `llama-perplexity` convention, the one its users compare by: the whole text
// tokenized once with BOS first, cut into chunks of `context` tokens, the first token of each
// chunk replaced by BOS, each chunk a fresh sequence, and the second half of each chunk scored
// (positions context/2 .. context-2 predicting the next token: context/2 - 1 per chunk).
struct ChunkedPerplexityOptions {
  int context = 512;
  int chunks = -1;  // -1: every whole chunk in the text
};

struct ChunkedPerplexity {
  int chunks = 0;
  int64_t count = 0;  // scored tokens
  double nll = 0;     // sum of -log p
  double nll2 = 0;    // sum of (-log p)^2

  double perplexity() const;
  // llama-perplexity's "+/-": the standard error of the mean NLL, times the perplexity.
  double uncertainty() const;
};

// `on_chunk(done, total, so_far)` after each chunk (the running estimate).
absl::StatusOr<ChunkedPerplexity> ScoreChunks(
    Backend& backend, std::span<const int> tokens, int bos, const ChunkedPerplexityOptions& options,
    const std::function<void(int, int, const ChunkedPerplexity&)>& on_chunk = nullptr);

}  // namespace accllm
