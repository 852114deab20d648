#include "runtime/sampling/sampler.h"

#include <cmath>
#include <random>
#include <set>

#include "gmock/gmock.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

constexpr int kVocab = 100;
constexpr int kDraws = 2000;

std::vector<float> RandomLogits(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = normal(rng);
  return logits;
}

// Ids sorted by logit, highest first.
std::vector<int> Ranked(const std::vector<float>& logits) {
  std::vector<int> ids(logits.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(i);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  return ids;
}

std::vector<int> Draw(const SamplingParams& params, const std::vector<float>& logits, int n = kDraws) {
  Sampler sampler(params);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> copy = logits;
    out.push_back(sampler.Sample(copy, {}));
  }
  return out;
}

TEST(SamplerTest, GreedyPicksArgmaxLowestIdOnTies) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  Sampler sampler({.temperature = 0.0f});
  EXPECT_EQ(sampler.Sample(logits, {}), 1);
}

TEST(SamplerTest, SameSeedSameOutputDifferentSeedDifferentOutput) {
  const std::vector<float> logits = RandomLogits(1);
  const SamplingParams params{.temperature = 1.0f, .seed = 1234};
  EXPECT_EQ(Draw(params, logits, 200), Draw(params, logits, 200));
  SamplingParams other = params;
  other.seed = 99;
  EXPECT_NE(Draw(params, logits, 200), Draw(other, logits, 200));
}

TEST(SamplerTest, TopKNeverPicksExcludedTokens) {
  for (uint32_t seed = 0; seed < 5; ++seed) {
    const std::vector<float> logits = RandomLogits(seed);
    const std::vector<int> ranked = Ranked(logits);
    for (int k : {1, 3, 10}) {
      const std::set<int> allowed(ranked.begin(), ranked.begin() + k);
      std::set<int> seen;
      for (int id : Draw({.temperature = 1.5f, .top_k = k, .seed = seed}, logits)) {
        EXPECT_TRUE(allowed.contains(id)) << "k=" << k << " picked " << id;
        seen.insert(id);
      }
      if (k == 3) {
        EXPECT_EQ(seen.size(), 3u) << "all of the top 3 should appear in 2000 draws";
      }
    }
  }
}

TEST(SamplerTest, TopPNeverPicksOutsideTheNucleus) {
  for (uint32_t seed = 0; seed < 5; ++seed) {
    const std::vector<float> logits = RandomLogits(seed);
    const std::vector<int> ranked = Ranked(logits);
    const float top_p = 0.6f;
    // The nucleus: the smallest prefix of the ranking whose probability mass reaches top_p.
    const float max_logit = logits[ranked[0]];
    double total = 0;
    for (float l : logits) total += std::exp(l - max_logit);
    std::set<int> nucleus;
    double mass = 0;
    for (int id : ranked) {
      nucleus.insert(id);
      mass += std::exp(logits[id] - max_logit) / total;
      if (mass >= top_p) break;
    }
    ASSERT_LT(nucleus.size(), static_cast<std::size_t>(kVocab));
    for (int id : Draw({.temperature = 1.0f, .top_p = top_p, .seed = seed}, logits)) {
      EXPECT_TRUE(nucleus.contains(id)) << "picked " << id;
    }
  }
}

TEST(SamplerTest, MinPNeverPicksUnlikelyTokens) {
  for (uint32_t seed = 0; seed < 5; ++seed) {
    const std::vector<float> logits = RandomLogits(seed);
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    const float min_p = 0.2f;
    for (int id : Draw({.temperature = 1.0f, .min_p = min_p, .seed = seed}, logits)) {
      // p(id) / p(max) = exp(l_id - l_max) at temperature 1.
      EXPECT_GE(std::exp(logits[id] - max_logit), min_p * 0.999f) << "picked " << id;
    }
  }
}

TEST(SamplerTest, RepetitionPenaltyDemotesRecentTokens) {
  std::vector<float> logits = {2.0f, 1.9f, -1.0f};
  Sampler sampler({.temperature = 0.0f, .repetition_penalty = 1.5f});
  const std::vector<int> history = {0, 0, 2};
  EXPECT_EQ(sampler.Sample(logits, history), 1);
  EXPECT_FLOAT_EQ(logits[0], 2.0f / 1.5f);  // penalised once, though it appears twice
  EXPECT_FLOAT_EQ(logits[2], -1.5f);
  // Outside the window, no penalty.
  std::vector<float> fresh = {2.0f, 1.9f, -1.0f};
  Sampler windowed({.temperature = 0.0f, .repetition_penalty = 1.5f, .repetition_window = 1});
  EXPECT_EQ(windowed.Sample(fresh, history), 0);
}

TEST(SamplerTest, ValidationNamesTheParameter) {
  const std::vector<std::pair<SamplingParams, std::string>> bad = {
      {{.temperature = -1.0f}, "temperature"},
      {{.temperature = NAN}, "temperature"},
      {{.top_k = -1}, "top_k"},
      {{.top_p = 0.0f}, "top_p"},
      {{.top_p = 1.5f}, "top_p"},
      {{.min_p = -0.1f}, "min_p"},
      {{.repetition_penalty = 0.0f}, "repetition_penalty"},
      {{.repetition_window = -2}, "repetition_window"},
  };
  for (const auto& [params, name] : bad) {
    const absl::Status status = ValidateSamplingParams(params);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(name));
  }
  EXPECT_TRUE(ValidateSamplingParams({}).ok());
}

}  // namespace
}  // namespace accllm
