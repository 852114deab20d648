#include "runtime/io/safetensors.h"

#include <cstring>

#include "gmock/gmock.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ReadFile;
using ::accllm::testing::ScratchDir;

TEST(SafetensorsTest, WriteThenReadRoundTrips) {
  ScratchDir dir;
  const std::string path = (dir / "t.safetensors").string();
  const std::vector<TensorToWrite> tensors = {
      {"a", DType::kF32, {2, 3}, [](std::span<std::byte> out) {
         for (int i = 0; i < 6; ++i) {
           const float v = static_cast<float>(i) * 0.5f;
           std::memcpy(out.data() + 4 * i, &v, 4);
         }
         return absl::OkStatus();
       }},
      {"b", DType::kU8, {5}, [](std::span<std::byte> out) {
         for (int i = 0; i < 5; ++i) out[i] = std::byte(i + 10);
         return absl::OkStatus();
       }},
  };
  ASSERT_OK(WriteSafetensors(path, tensors, {{"scheme", "test"}}));

  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
  EXPECT_EQ(file->metadata().at("scheme"), "test");
  ASSERT_EQ(file->tensors().size(), 2u);
  const SafetensorsTensor* a = file->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data.data()) % 64, 0u) << "data section is 64-byte aligned";
  float v5;
  std::memcpy(&v5, a->data.data() + 20, 4);
  EXPECT_EQ(v5, 2.5f);
  const SafetensorsTensor* b = file->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(static_cast<int>(b->data[4]), 14);
  EXPECT_EQ(file->Find("c"), nullptr);

  // The header is plain JSON padded with spaces, as other safetensors readers expect.
  const std::string raw = ReadFile(path);
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ((8 + header_len) % 64, 0u);
  EXPECT_EQ(raw.substr(8, 1), "{");
}

TEST(SafetensorsTest, DTypes) {
  EXPECT_EQ(ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(std::string(DTypeName(DType::kI8)), "I8");
  EXPECT_FALSE(ParseDType("F12").has_value());
}

}  // namespace
}  // namespace accllm
