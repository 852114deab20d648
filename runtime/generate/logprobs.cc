#include "runtime/generate/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace accllm {

TokenLogprobs ComputeLogprobs(std::span<const float> logits, int chosen, int top_n) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - max));
  const float log_z = max + static_cast<float>(std::log(sum));

  TokenLogprobs out;
  out.logprob = logits[static_cast<std::size_t>(chosen)] - log_z;
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + top_n, ids.end(), [&](int a, int b) {
    return logits[static_cast<std::size_t>(a)] != logits[static_cast<std::size_t>(b)]
               ? logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)]
               : a < b;
  });
  for (int i = 0; i < top_n; ++i) {
    out.top.push_back({ids[static_cast<std::size_t>(i)], logits[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)])] - log_z});
  }
  return out;
}

}  // namespace accllm
