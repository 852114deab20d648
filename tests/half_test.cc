#include "runtime/common/half.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace accllm {
namespace {

TEST(HalfTest, Fp16RoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    if ((bits & 0x7c00) == 0x7c00) continue;  // inf / NaN
    EXPECT_EQ(FloatToFp16(Fp16ToFloat(bits)), bits) << std::hex << h;
  }
}

TEST(HalfTest, Fp16KnownValuesAndRounding) {
  EXPECT_EQ(FloatToFp16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToFp16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToFp16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToFp16(1e6f), 0x7c00);                       // overflow -> inf
  EXPECT_EQ(FloatToFp16(1.0f + 0x1p-11f), 0x3c00);            // tie -> even
  EXPECT_EQ(FloatToFp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); // above tie -> up
  EXPECT_EQ(FloatToFp16(0x1p-24f), 0x0001);                   // smallest subnormal
  EXPECT_EQ(Fp16ToFloat(0x0001), 0x1p-24f);
  EXPECT_TRUE(std::isnan(Fp16ToFloat(FloatToFp16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(HalfTest, Bf16) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f), 0x3f80);             // tie -> even
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f + 0x1p-16f), 0x3f81);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    if ((bits & 0x7f80) == 0x7f80) continue;
    EXPECT_EQ(FloatToBf16(Bf16ToFloat(bits)), bits) << std::hex << h;
  }
}

}  // namespace
}  // namespace accllm
