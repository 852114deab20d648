#include "runtime/kv/sequence_kv.h"

#include <set>

#include "gtest/gtest.h"
#include "runtime/kv/kv_storage.h"
#include "runtime/common/half.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

TEST(PagePoolTest, AllocatesUntilEmptyAndReuses) {
  PagePool pool(3);
  EXPECT_EQ(pool.free_count(), 3);
  auto a = pool.Allocate(), b = pool.Allocate(), c = pool.Allocate();
  ASSERT_TRUE(a && b && c);
  EXPECT_FALSE(pool.Allocate().has_value());
  pool.Free(*b);
  EXPECT_EQ(pool.Allocate(), b);
}

TEST(SequenceKvTest, FullAttentionKeepsEveryPage) {
  PagePool pool(8);
  SequenceKv seq(pool, 4, LambdaConfig{});
  ASSERT_OK(seq.Reserve(10));
  seq.Advance(10);
  seq.Evict(10);
  EXPECT_EQ(seq.pages_held(), 3);
  EXPECT_NE(seq.PageOf(0), seq.PageOf(4));
  EXPECT_EQ(seq.PageOf(8), seq.PageOf(9));
}

// Sinks 2, window 6, pages of 4 tokens: the exact pages held and freed as a sequence grows.
TEST(SequenceKvTest, LambdaEvictsWholePagesOutsideSinksAndWindow) {
  PagePool pool(8);
  SequenceKv seq(pool, 4, LambdaConfig{2, 6});
  std::vector<int> held;
  for (int pos = 0; pos < 24; ++pos) {
    ASSERT_OK(seq.Reserve(1));
    seq.Advance(1);
    seq.Evict(seq.length());
    held.push_back(seq.pages_held());
    EXPECT_LE(seq.pages_held(), 1 + 2 + 1);
    // The sinks and the window of the next query are all still reachable.
    for (int p = 0; p < 2; ++p) EXPECT_GE(seq.PageOf(p), 0);
    for (int p = std::max(0, pos - 4); p <= pos; ++p) EXPECT_GE(seq.PageOf(p), 0);
  }
  // After position m the next query (m + 1) needs the sink page and the pages of positions
  // [m - 4, m]: exactly those are held.
  for (int m = 0; m < 24; ++m) {
    std::set<int> pages = {0};
    for (int p = std::max(0, m - 4); p <= m; ++p) pages.insert(p / 4);
    EXPECT_EQ(held[m], static_cast<int>(pages.size())) << "after position " << m;
  }
  seq.Release();
  EXPECT_EQ(pool.used(), 0);
}

TEST(SequenceKvTest, ReserveIsAllOrNothing) {
  PagePool pool(2);
  SequenceKv seq(pool, 4, LambdaConfig{});
  EXPECT_EQ(seq.Reserve(12).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.used(), 0);
  EXPECT_TRUE(seq.Reserve(8).ok());
  EXPECT_EQ(pool.used(), 2);
}

TEST(SequenceKvTest, MaxPages) {
  EXPECT_EQ(SequenceKv::MaxPages(LambdaConfig{4, 64}, 16, 1, 100000), 1 + 4 + 1);
  EXPECT_EQ(SequenceKv::MaxPages(LambdaConfig{4, 64}, 16, 32, 100000), 1 + 6 + 1);
  EXPECT_EQ(SequenceKv::MaxPages(LambdaConfig{}, 16, 1, 100), 7);
  EXPECT_EQ(SequenceKv::MaxPages(LambdaConfig{4, 64}, 16, 1, 20), 2);
}

TEST(Kv4Test, QuantizesWithinHalfAStep) {
  std::vector<float> x = {-1.0f, -0.5f, 0.0f, 0.25f, 0.3f, 0.9f, 1.5f, 2.0f};
  uint8_t codes[4];
  const Kv4Params p = QuantizeKv4(x, codes);
  const float scale = Fp16ToFloat(p.scale), min = Fp16ToFloat(p.min);
  EXPECT_NEAR(min, -1.0f, 1e-3);
  EXPECT_NEAR(scale, 3.0f / 15.0f, 1e-3);
  for (int i = 0; i < 8; ++i) {
    const int q = (codes[i / 2] >> (4 * (i % 2))) & 15;
    EXPECT_LE(std::fabs(min + scale * q - x[i]), scale / 2 + 1e-3) << i;
  }
}

}  // namespace
}  // namespace accllm
