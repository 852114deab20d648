// W8 (the 8-bit classifier): every kernel path gives bit-identical results to the scalar path,
// the scalar path computes the product of the dequantized weights and activations, and
// quantization keeps each weight within half a step of its group's scale.
#include <cmath>
#include <cstring>
#include <random>

#include "gmock/gmock.h"
#include "runtime/common/half.h"
#include "runtime/cpu/kernels.h"
#include "runtime/quant/a8.h"
#include "runtime/quant/w8.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

struct Case {
  int rows, cols, group_size, tokens;
};

std::vector<uint16_t> RandomF16(int rows, int cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<uint16_t> w(static_cast<std::size_t>(rows) * cols);
  for (uint16_t& v : w) v = FloatToFp16(normal(rng));
  w[0] = FloatToFp16(0.9f);  // an outlier: its group's scale is set by it
  return w;
}

class W8A8KernelTest : public ::testing::TestWithParam<Case> {};

TEST_P(W8A8KernelTest, AllPathsBitExactAndScalarMatchesDequantizedProduct) {
  const Case c = GetParam();
  std::mt19937 rng(c.rows * 131 + c.cols * 7 + c.group_size + c.tokens);
  const std::vector<uint16_t> f16 = RandomF16(c.rows, c.cols, rng);
  ASSERT_OK_AND_ASSIGN(W8Matrix m, QuantizeW8(f16, {c.rows, c.cols, c.group_size}));
  const W8Shape& shape = m.shape;

  // Quantization: within half a step of the original, codes in [-127, 127].
  std::vector<float> row(c.cols);
  for (int r = 0; r < c.rows; ++r) {
    DequantizeW8Row(m.view(), r, row);
    for (int j = 0; j < c.cols; ++j) {
      const float scale = m.scales[W2ParamIndex(r, j / c.group_size, shape.groups())];
      ASSERT_LE(std::fabs(row[j] - Fp16ToFloat(f16[static_cast<std::size_t>(r) * c.cols + j])), 0.5f * scale * 1.0001f);
    }
  }
  for (int8_t q : m.codes) ASSERT_GE(q, -127);

  A8Batch x(shape.cols_padded(), shape.group_size, c.tokens);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int t = 0; t < c.tokens; ++t) {
    std::vector<float> v(c.cols);
    for (float& e : v) e = normal(rng);
    x.Quantize(t, v);
  }
  const int64_t ldy = c.rows + 5;
  std::vector<float> reference(static_cast<std::size_t>(ldy) * c.tokens, -1.0f);
  kScalarKernels.matmul_w8a8(m.view(), x, 0, shape.row_tiles(), reference.data(), ldy);
  for (int r = 0; r < c.rows; ++r) {
    DequantizeW8Row(m.view(), r, row);
    for (int t = 0; t < c.tokens; ++t) {
      double expected = 0, magnitude = 0;
      for (int j = 0; j < c.cols; ++j) {
        const double term = double{row[j]} * x.codes(t)[j] * x.scale(t);
        expected += term;
        magnitude += std::fabs(term);
      }
      ASSERT_NEAR(reference[t * ldy + r], expected, 1e-5 * magnitude + 1e-12) << "row " << r << " token " << t;
    }
  }
  for (CpuPath p : kAllCpuPaths) {
    absl::StatusOr<const CpuKernels*> k = KernelsFor(p);
    if (!k.ok()) continue;
    SCOPED_TRACE((*k)->name);
    std::vector<float> got(reference.size(), -1.0f);
    const int split = shape.row_tiles() / 2;  // two calls over a split range equal one
    (*k)->matmul_w8a8(m.view(), x, 0, split, got.data(), ldy);
    (*k)->matmul_w8a8(m.view(), x, split, shape.row_tiles(), got.data(), ldy);
    ::accllm::testing::ExpectSameBits(got, reference);
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int group : {32, 64, 128}) {
    // 13: token blocks of 8, 4 and 1; 16 and more: AMX's 16-token tiles, whole and partial.
    for (int tokens : {1, 3, 4, 9, 13, 16, 21, 40}) {
      cases.push_back({64, 64, group, tokens});
      cases.push_back({37, 300, group, tokens});   // ragged rows and columns
      cases.push_back({512, 64, group, tokens});   // stories260K's classifier
    }
  }
  cases.push_back({4096, 512, 128, 16});  // gutenberg30M's classifier, a batch
  // AMX: several chunks of groups (K = 1024 each, the last one short) and passes of 256 tokens.
  cases.push_back({48, 2304, 128, 20});
  cases.push_back({37, 300, 64, 300});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(RandomShapes, W8A8KernelTest, ::testing::ValuesIn(Cases()), [](const auto& info) {
  const Case& c = info.param;
  return std::to_string(c.rows) + "x" + std::to_string(c.cols) + "_g" + std::to_string(c.group_size) + "_t" +
         std::to_string(c.tokens);
});

TEST(W8QuantizeTest, RejectsBadInput) {
  const std::vector<uint16_t> w(64 * 64, FloatToFp16(0.5f));
  EXPECT_FALSE(QuantizeW8(w, {64, 64, 48}).ok());  // group not a power of two
  EXPECT_FALSE(QuantizeW8(w, {64, 63, 32}).ok());  // count mismatch
}

}  // namespace
}  // namespace accllm
