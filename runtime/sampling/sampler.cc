#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace accllm {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  const auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (!(p.temperature >= 0.0f && p.temperature <= 100.0f)) {
    return bad(absl::StrCat("temperature must be in [0, 100], got ", p.temperature));
  }
  if (p.top_k < 0) return bad(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return bad(absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f)) {
    return bad(absl::StrCat("repetition_penalty must be in (0, 10], got ", p.repetition_penalty));
  }
  if (p.repetition_window < 0) return bad(absl::StrCat("repetition_window must be >= 0, got ", p.repetition_window));
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int Sampler::Sample(std::span<float> logits, std::span<const int> history) {
  const int vocab = static_cast<int>(logits.size());

  // Repetition penalty (CTRL): shrink positive logits, grow negative ones, once per token.
  if (params_.repetition_penalty != 1.0f && params_.repetition_window > 0) {
    const std::size_t window = std::min<std::size_t>(history.size(), params_.repetition_window);
    std::vector<bool> seen(static_cast<std::size_t>(vocab), false);
    for (int id : history.last(window)) {
      if (id < 0 || id >= vocab || seen[id]) continue;
      seen[id] = true;
      float& l = logits[id];
      l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }

  if (params_.temperature == 0.0f) {
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

  // Softmax at the given temperature, over candidates sorted by probability.
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  candidates_.resize(static_cast<std::size_t>(vocab));
  for (int i = 0; i < vocab; ++i) {
    candidates_[i] = {i, std::exp((logits[i] - max_logit) / params_.temperature)};
  }
  const auto by_p = [](const Candidate& a, const Candidate& b) { return a.p != b.p ? a.p > b.p : a.id < b.id; };
  std::size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < keep) {
    keep = static_cast<std::size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_p);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_p);
  }
  float total = 0.0f;
  for (std::size_t i = 0; i < keep; ++i) total += candidates_[i].p;
  for (std::size_t i = 0; i < keep; ++i) candidates_[i].p /= total;

  // top-p: the smallest prefix whose mass reaches top_p.
  if (params_.top_p < 1.0f) {
    float cumulative = 0.0f;
    for (std::size_t i = 0; i < keep; ++i) {
      cumulative += candidates_[i].p;
      if (cumulative >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  // min-p: relative to the most likely token (candidates_[0]).
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p * candidates_[0].p;
    std::size_t i = 1;
    while (i < keep && candidates_[i].p >= threshold) ++i;
    keep = i;
  }

  float mass = 0.0f;
  for (std::size_t i = 0; i < keep; ++i) mass += candidates_[i].p;
  // A uniform draw in [0, mass) from the top 24 bits: reproducible on every platform.
  const float r = static_cast<float>(rng_() >> 40) * 0x1p-24f * mass;
  float cumulative = 0.0f;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += candidates_[i].p;
    if (r < cumulative) return candidates_[i].id;
  }
  return candidates_[keep - 1].id;  // rounding
}

}  // namespace accllm
