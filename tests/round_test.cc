#include "runtime/common/round.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace accllm {
namespace {

TEST(RoundHalfEvenTest, MatchesNearbyintOnTiesAndQuantizerRange) {
  for (float v : {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -127.5f, 0.0f, -0.0f, 0.49999997f, 127.0f}) {
    EXPECT_EQ(RoundHalfEven(v), std::nearbyint(v)) << v;
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-130.0f, 130.0f);
  for (int i = 0; i < 100000; ++i) {
    const float v = uniform(rng);
    ASSERT_EQ(RoundHalfEven(v), std::nearbyint(v)) << v;
  }
}

}  // namespace
}  // namespace accllm
