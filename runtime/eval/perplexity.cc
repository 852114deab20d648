#include "runtime/eval/perplexity.h"

#include <algorithm>
#include <cmath>

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

absl::StatusOr<PerplexityResult> Perplexity(Backend& backend, std::span<const int> sequence, int bucket_size) {
  PerplexityResult result;
  if (sequence.size() < 2) return result;
  const std::unique_ptr<SequenceKv> seq = backend.NewSequence();
  std::vector<float> logits(static_cast<std::size_t>(backend.config().vocab_size));
  SequenceKv* const seqs[] = {seq.get()};
  for (std::size_t i = 0; i + 1 < sequence.size(); ++i) {
    RETURN_IF_ERROR(backend.Decode(seqs, sequence.subspan(i, 1), logits));
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float l : logits) sum += std::exp(static_cast<double>(l) - max_logit);
    const double nll = std::log(sum) + max_logit - logits[sequence[i + 1]];
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
  return result;
}

}  // namespace accllm
