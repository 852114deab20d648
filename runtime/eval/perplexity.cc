#include "runtime/eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace accllm {

double PerplexityResult::perplexity() const { return tokens > 0 ? std::exp(nll / tokens) : NAN; }

double PerplexityResult::bucket_perplexity(std::size_t b) const {
  return b < bucket_tokens.size() && bucket_tokens[b] > 0 ? std::exp(bucket_nll[b] / bucket_tokens[b]) : NAN;
}

void PerplexityResult::Add(const PerplexityResult& o) {
  nll += o.nll;
  tokens += o.tokens;
  if (bucket_nll.size() < o.bucket_nll.size()) {
    bucket_nll.resize(o.bucket_nll.size(), 0.0);
    bucket_tokens.resize(o.bucket_tokens.size(), 0);
  }
  for (std::size_t b = 0; b < o.bucket_nll.size(); ++b) {
    bucket_nll[b] += o.bucket_nll[b];
    bucket_tokens[b] += o.bucket_tokens[b];
  }
}

namespace {

// -log softmax(logits)[target], in double.
double NegativeLogLikelihood(std::span<const float> logits, int target) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max_logit);
  return std::log(sum) + max_logit - logits[target];
}

}  // namespace

double ChunkedPerplexity::perplexity() const { return count > 0 ? std::exp(nll / count) : NAN; }

double ChunkedPerplexity::uncertainty() const {
  if (count < 2) return NAN;
  const double mean = nll / count;
  const double variance = nll2 / count - mean * mean;
  return variance > 0 ? std::sqrt(variance / (count - 1)) * std::exp(mean) : 0.0;
}

absl::StatusOr<ChunkedPerplexity> ScoreChunks(Backend& backend, std::span<const int> tokens, int bos,
                                              const ChunkedPerplexityOptions& options,
                                              const std::function<void(int, int, const ChunkedPerplexity&)>& on_chunk) {
  const int n_ctx = options.context;
  if (n_ctx < 4) return absl::InvalidArgumentError(absl::StrCat("a context of ", n_ctx, " tokens is too short to score"));
  const int available = static_cast<int>(tokens.size() / static_cast<std::size_t>(n_ctx));
  if (available == 0) {
    return absl::InvalidArgumentError(absl::StrCat("the text has ", tokens.size(), " tokens, fewer than one chunk of ", n_ctx));
  }
  const int chunks = options.chunks < 0 ? available : std::min(options.chunks, available);
  const std::size_t vocab = static_cast<std::size_t>(backend.config().vocab_size);
  const int step = backend.max_step_tokens();
  std::vector<int> chunk(n_ctx);
  std::vector<float> logits(static_cast<std::size_t>(n_ctx) * vocab);
  ChunkedPerplexity result;
  const int first = n_ctx / 2;
  for (int i = 0; i < chunks; ++i) {
    std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(i) * n_ctx, n_ctx, chunk.begin());
    chunk[0] = bos;
    const std::unique_ptr<SequenceKv> seq = backend.NewSequence();
    for (int begin = 0; begin < n_ctx; begin += step) {
      const int count = std::min(step, n_ctx - begin);
      RETURN_IF_ERROR(backend.PrefillEveryLogit(*seq, std::span<const int>(chunk).subspan(begin, count),
                                                std::span<float>(logits).subspan(begin * vocab, count * vocab)));
    }
    for (int j = first; j < n_ctx - 1; ++j) {
      const double nll = NegativeLogLikelihood(std::span<const float>(logits).subspan(j * vocab, vocab), chunk[j + 1]);
      result.nll += nll;
      result.nll2 += nll * nll;
      ++result.count;
    }
    result.chunks = i + 1;
    if (on_chunk) on_chunk(i + 1, chunks, result);
  }
  return result;
}

absl::StatusOr<PerplexityResult> Perplexity(Backend& backend, std::span<const int> sequence, int bucket_size) {
  PerplexityResult result;
  if (sequence.size() < 2) return result;
  const std::unique_ptr<SequenceKv> seq = backend.NewSequence();
  const std::size_t vocab = static_cast<std::size_t>(backend.config().vocab_size);
  const std::size_t step = static_cast<std::size_t>(backend.max_step_tokens());
  std::vector<float> logits(step * vocab);
  // Every position but the last predicts the next token, a prefill step at a time.
  for (std::size_t begin = 0; begin + 1 < sequence.size(); begin += step) {
    const std::size_t count = std::min(step, sequence.size() - 1 - begin);
    RETURN_IF_ERROR(backend.PrefillEveryLogit(*seq, sequence.subspan(begin, count),
                                              std::span<float>(logits).first(count * vocab)));
    for (std::size_t j = 0; j < count; ++j) {
      const std::size_t i = begin + j;
      const double nll = NegativeLogLikelihood(std::span<const float>(logits).subspan(j * vocab, vocab), sequence[i + 1]);
      const std::size_t bucket = (i + 1) / bucket_size;
      if (result.bucket_nll.size() <= bucket) {
        result.bucket_nll.resize(bucket + 1, 0.0);
        result.bucket_tokens.resize(bucket + 1, 0);
      }
      result.bucket_nll[bucket] += nll;
      result.bucket_tokens[bucket] += 1;
      result.nll += nll;
      result.tokens += 1;
    }
  }
  return result;
}

}  // namespace accllm
