// Every kernel path gives bit-identical results to the scalar path, and the scalar path computes
// the product of the dequantized weights and activations.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>

#include "gmock/gmock.h"
#include "runtime/common/exp.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/half.h"
#include "runtime/common/nn_ops.h"
#include "runtime/cpu/kernels.h"
#include "runtime/kv/kv_storage.h"
#include "runtime/quant/a8.h"
#include "runtime/quant/w2.h"
#include "tests/test_support.h"

namespace accllm {
using ::accllm::testing::AvailableKernels;
namespace {

// Relative error allowed between the scalar kernel and a double-precision product of the
// dequantized operands (the kernel rounds to float once per group).
constexpr double kMaxRelativeError = 1e-5;

struct Case {
  int rows, cols, group_size, tokens;
  bool sparse;
};

std::vector<float> RandomMatrix(int rows, int cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<std::size_t>(rows) * cols);
  for (float& v : w) v = normal(rng);
  return w;
}

// Keeps 2 of each 4 at random positions.
std::vector<uint8_t> RandomMask(int rows, int cols, std::mt19937& rng) {
  std::vector<uint8_t> keep(static_cast<std::size_t>(rows) * cols, 0);
  for (std::size_t i = 0; i < keep.size(); i += 4) {
    int a = rng() % 4, b = rng() % 3;
    if (b >= a) ++b;
    keep[i + a] = keep[i + b] = 1;
  }
  return keep;
}


class W2A8KernelTest : public ::testing::TestWithParam<Case> {};

TEST_P(W2A8KernelTest, AllPathsBitExactAndScalarMatchesDequantizedProduct) {
  const Case c = GetParam();
  std::mt19937 rng(c.rows * 7919 + c.cols * 31 + c.group_size + c.tokens + c.sparse);
  const W2Shape shape{c.rows, c.cols, c.group_size, c.sparse};
  const std::vector<float> w = RandomMatrix(c.rows, c.cols, rng);
  const std::vector<uint8_t> keep = c.sparse ? RandomMask(c.rows, c.cols, rng) : std::vector<uint8_t>{};
  ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(w, shape, keep));
  // Every zero point the format has, extremes included (levels -6..6 in the int8 paths).
  for (std::size_t i = 0; i < m.zeros.size(); ++i) m.zeros[i] = static_cast<uint8_t>((i * 5 + c.tokens) % (kW2MaxZero + 1));

  A8Batch x(shape.cols_padded(), shape.group_size, c.tokens);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int t = 0; t < c.tokens; ++t) {
    std::vector<float> v(c.cols);
    for (float& e : v) e = normal(rng);
    x.Quantize(t, v);
  }

  const int64_t ldy = c.rows + 3;
  std::vector<float> reference(static_cast<std::size_t>(ldy) * c.tokens, -1.0f);
  kScalarKernels.matmul_w2a8(m.view(), x, 0, shape.row_tiles(), reference.data(), ldy);

  // Scalar against the dequantized operands in double precision.
  std::vector<float> row(c.cols);
  for (int r = 0; r < c.rows; ++r) {
    DequantizeW2Row(m.view(), r, row);
    for (int t = 0; t < c.tokens; ++t) {
      double expected = 0, magnitude = 0;
      for (int j = 0; j < c.cols; ++j) {
        const double term = double{row[j]} * x.codes(t)[j] * x.scale(t);
        expected += term;
        magnitude += std::fabs(term);
      }
      ASSERT_NEAR(reference[t * ldy + r], expected, kMaxRelativeError * magnitude + 1e-12) << "row " << r << " token " << t;
    }
  }

  for (const CpuKernels* k : AvailableKernels()) {
    SCOPED_TRACE(k->name);
    std::vector<float> got(reference.size(), -1.0f);
    // Two calls over a split tile range must equal one call over all of it.
    const int split = shape.row_tiles() / 2;
    k->matmul_w2a8(m.view(), x, 0, split, got.data(), ldy);
    k->matmul_w2a8(m.view(), x, split, shape.row_tiles(), got.data(), ldy);
    ::accllm::testing::ExpectSameBits(got, reference);
  }
}

// The largest sums the integer kernels meet: every code 3 against activations of +-127, in groups
// of every size up to 1024 columns (the AVX2 path adds pair sums in int16 and must widen them
// before they overflow).
TEST(W2A8KernelExtremesTest, TopCodesAgainstFullScaleActivations) {
  std::mt19937 rng(5);
  for (int group : {32, 128, 256, 512, 1024}) {
    SCOPED_TRACE(group);
    const W2Shape shape{32, 2048, group, false};
    ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(RandomMatrix(32, 2048, rng), shape, {}));
    std::fill(m.codes.begin(), m.codes.end(), uint8_t{0xFF});
    A8Batch x(shape.cols_padded(), group, 2);
    x.Quantize(0, std::vector<float>(2048, 1.0f));
    x.Quantize(1, std::vector<float>(2048, -1.0f));
    ASSERT_EQ(x.codes(0)[0], 127);
    ASSERT_EQ(x.codes(1)[0], -127);
    std::vector<float> reference(2 * 32), got(2 * 32);
    kScalarKernels.matmul_w2a8(m.view(), x, 0, shape.row_tiles(), reference.data(), 32);
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(k->name);
      k->matmul_w2a8(m.view(), x, 0, shape.row_tiles(), got.data(), 32);
      ::accllm::testing::ExpectSameBits(got, reference);
    }
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (bool sparse : {false, true}) {
    for (int group : {32, 64, 128, 256}) {
      // 13 = token blocks of 8, 4 and 1; 16 and more: AMX's 16-token tiles, one (16), two (21: the
      // narrow way) or more (40, 67), whole and partial.
      for (int tokens : {1, 3, 4, 9, 13, 16, 21, 40, 67}) {
        cases.push_back({64, 64, group, tokens, sparse});
        cases.push_back({172, 64, group, tokens, sparse});     // stories260K w1 (ragged rows)
        cases.push_back({64, 172, group, tokens, sparse});     // stories260K w2 (ragged cols)
        cases.push_back({37, 300, group, tokens, sparse});
      }
    }
    cases.push_back({256, 1024, 128, 64, sparse});  // a full continuous batch
    // AMX prepares its B rows a chunk of groups at a time (K = 1024) and runs up to 256 tokens per
    // pass: several chunks, the last one short (18 groups of 128: 8 + 8 + 2; 5 of 256: 4 + 1; 17
    // of 64, one K step each: 16 + 1; one group of 1024 per chunk), and several passes (300 tokens:
    // 256 + 44).
    cases.push_back({48, 2304, 128, 20, sparse});
    cases.push_back({32, 1280, 256, 33, sparse});
    cases.push_back({40, 1088, 64, 17, sparse});
    cases.push_back({16, 2048, 1024, 16, sparse});
    cases.push_back({64, 172, 128, 130, sparse});
    cases.push_back({37, 300, 64, 300, sparse});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(RandomShapes, W2A8KernelTest, ::testing::ValuesIn(Cases()), [](const auto& info) {
  const Case& c = info.param;
  return std::string(c.sparse ? "Sparse" : "Dense") + "_" + std::to_string(c.rows) + "x" + std::to_string(c.cols) +
         "_g" + std::to_string(c.group_size) + "_t" + std::to_string(c.tokens);
});

// Every grid the format has (zero points 0..6: one-sided, holding 0, symmetric about 0) is found
// by the parameter search when a group lies on it, and round-trips exactly.
// The AMX kernels load activations a whole 16-token tile at a time, past tokens(): those rows
// must be memory of the batch (AddressSanitizer checks every byte read here).
TEST(A8QuantizeTest, CodesAreReadableToWholeSixteenTokenTiles) {
  for (int capacity : {1, 16, 21, 40}) {
    A8Batch batch(256, 128, capacity);
    const int readable = A8Batch::ReadableTokens(capacity);
    EXPECT_EQ(readable % 16, 0);
    EXPECT_GE(readable, capacity);
    EXPECT_LT(readable, capacity + 16);
    int64_t sum = 0;
    for (int t = 0; t < readable; ++t) {
      for (int c = 0; c < batch.cols_padded(); ++c) sum += batch.codes(t)[c];
    }
    EXPECT_EQ(sum, 0) << capacity;  // nothing quantized yet: all zero
  }
}

// A8's scale is max |x| / 127 exactly (the integer-bits maximum gives the float maximum), for
// widths that are and are not multiples of its 16 lanes, signed zeros and subnormals included;
// codes round half to even and the padding is zero.
TEST(A8QuantizeTest, ScaleIsTheExactAbsoluteMaximum) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int cols : {1, 15, 16, 17, 100, 11008}) {
    std::vector<float> x(cols);
    for (float& v : x) v = normal(rng);
    x[0] = -0.0f;
    if (cols > 2) x[cols / 2] = -1e-40f;  // subnormal
    float amax = 0.0f;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    const int padded = (cols + 127) / 128 * 128;
    A8Batch batch(padded, 128, 1);
    batch.Quantize(0, x);
    EXPECT_EQ(batch.scale(0), amax / 127.0f) << cols;
    const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;  // one column of -0: all zero
    for (int i = 0; i < cols; ++i) {
      ASSERT_EQ(batch.codes(0)[i], static_cast<int8_t>(std::nearbyint(x[i] * inverse))) << cols << " " << i;
    }
    for (int i = cols; i < padded; ++i) ASSERT_EQ(batch.codes(0)[i], 0);
  }
  A8Batch zeros(128, 128, 1);
  zeros.Quantize(0, std::vector<float>(128, 0.0f));
  EXPECT_EQ(zeros.scale(0), 0.0f);
}

// Every path's A8 quantizer gives the scalar QuantizeA8's bits: codes, biased codes, group sums and
// scale, over widths around its 8- and 32-value steps, group sizes it sums in SIMD and one it
// leaves to scalar code, ties that round to even, and non-finite values (a NaN product codes as 0).
TEST(A8QuantizeTest, EveryPathMatchesScalar) {
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  struct Input {
    std::vector<float> x;
    int group_size;
  };
  std::vector<Input> inputs;
  for (int cols : {1, 7, 8, 31, 32, 33, 100, 4096, 11008}) {
    for (int group_size : {16, 32, 128}) {
      std::vector<float> x(cols);
      for (float& v : x) v = normal(rng);
      inputs.push_back({x, group_size});
    }
  }
  std::vector<float> ties(64);
  for (int i = 0; i < 64; ++i) ties[i] = (i % 2 == 0 ? 1.0f : -1.0f) * (static_cast<float>(i) + 0.5f);
  ties[63] = 127.0f;  // inverse 1: every other value is a tie
  inputs.push_back({ties, 32});
  inputs.push_back({std::vector<float>(96, 0.0f), 32});
  std::vector<float> signed_zeros(40, -0.0f);
  signed_zeros[3] = 1e-40f;  // subnormal maximum
  inputs.push_back({signed_zeros, 32});
  std::vector<float> infinite = inputs[20].x, not_a_number = inputs[20].x;
  infinite[5] = -std::numeric_limits<float>::infinity();
  not_a_number[9] = std::numeric_limits<float>::quiet_NaN();
  inputs.push_back({infinite, inputs[20].group_size});
  inputs.push_back({not_a_number, inputs[20].group_size});

  for (std::size_t n = 0; n < inputs.size(); ++n) {
    const Input& in = inputs[n];
    const int cols = static_cast<int>(in.x.size()), padded = (cols + 127) / 128 * 128;
    A8Batch want(padded, in.group_size, 2);
    want.Quantize(1, in.x);
    if (n + 1 == inputs.size()) {
      EXPECT_EQ(want.codes(1)[9], 0);  // the NaN
    }
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(std::string(k->name) + " input " + std::to_string(n) + " width " + std::to_string(cols));
      A8Batch got(padded, in.group_size, 2);
      got.Quantize(1, in.x, k->a8_quantize);
      EXPECT_EQ(got.tokens(), 2);
      EXPECT_EQ(std::bit_cast<uint32_t>(got.scale(1)), std::bit_cast<uint32_t>(want.scale(1)));
      EXPECT_TRUE(std::equal(want.codes(1), want.codes(1) + padded, got.codes(1)));
      EXPECT_TRUE(std::equal(want.biased_codes(1), want.biased_codes(1) + padded, got.biased_codes(1)));
      EXPECT_TRUE(std::equal(want.group_sums(1), want.group_sums(1) + padded / in.group_size, got.group_sums(1)));
    }
  }
}

TEST(W2QuantizeTest, RepresentableValuesRoundTripExactly) {
  const W2Shape shape{16, 64, 32, false};
  const float scale = 0.25f;
  for (int zero = 0; zero <= kW2MaxZero; ++zero) {
    std::vector<float> w(16 * 64);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = scale * static_cast<float>(W2Level(static_cast<int>(i % 4), zero));
    ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(w, shape));
    std::vector<float> row(64);
    for (int r = 0; r < 16; ++r) {
      DequantizeW2Row(m.view(), r, row);
      for (int c = 0; c < 64; ++c) ASSERT_EQ(row[c], w[r * 64 + c]) << "zero " << zero << " at " << r << "," << c;
    }
  }
}

TEST(W2QuantizeTest, CodeIsNearbyintClamped) {
  // QuantizeW2Value rounds without nearbyint; it must agree with it everywhere, ties included.
  const auto reference = [](float v, const W2GroupParams& p) {
    const float q = std::nearbyint((v / p.scale + p.zero) * 0.5f);
    return static_cast<uint8_t>(q < 0 ? 0 : q > 3 ? 3 : q);
  };
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(-4.0f, 4.0f);
  for (int zero = 0; zero <= kW2MaxZero; ++zero) {
    for (float scale : {1.0f, 0.5f, 0.013f, 3.0e-8f, 7.5e4f}) {
      const W2GroupParams p{scale, static_cast<uint8_t>(zero)};
      for (int i = 0; i < 20000; ++i) {
        const float v = unit(rng) * scale * (i % 7 == 0 ? 1e7f : 1.0f);
        ASSERT_EQ(QuantizeW2Value(v, p), reference(v, p)) << v << " " << scale << " " << zero;
      }
      for (int k = -16; k <= 16; ++k) {  // every tie and grid point in reach
        const float v = scale * (0.5f * static_cast<float>(k));
        ASSERT_EQ(QuantizeW2Value(v, p), reference(v, p)) << v << " " << scale << " " << zero;
      }
      for (float v : {3.0e38f, -3.0e38f, 1.0e30f, -1.0e30f, 0.0f, -0.0f}) {
        ASSERT_EQ(QuantizeW2Value(v, p), reference(v, p)) << v << " " << scale << " " << zero;
      }
    }
  }
}

TEST(W2QuantizeTest, SparsePrunedWeightsAreZero) {
  std::mt19937 rng(1);
  const W2Shape shape{20, 96, 32, true};
  const std::vector<float> w = RandomMatrix(20, 96, rng);
  const std::vector<uint8_t> keep = RandomMask(20, 96, rng);
  ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(w, shape, keep));
  std::vector<float> row(96);
  for (int r = 0; r < 20; ++r) {
    DequantizeW2Row(m.view(), r, row);
    for (int c = 0; c < 96; ++c) {
      if (!keep[r * 96 + c]) {
        EXPECT_EQ(row[c], 0.0f);
      }
    }
  }
}

TEST(W2QuantizeTest, RejectsBadInput) {
  std::vector<float> w(16 * 64, 0.1f);
  EXPECT_FALSE(QuantizeW2(w, {16, 64, 48, false}).ok());          // group not a power of two
  EXPECT_FALSE(QuantizeW2(w, {16, 63, 32, false}).ok());          // count mismatch
  std::vector<uint8_t> three_of_four(16 * 64, 0);
  for (std::size_t i = 0; i < three_of_four.size(); i += 4) three_of_four[i] = three_of_four[i + 1] = three_of_four[i + 2] = 1;
  const auto bad_mask = QuantizeW2(w, {16, 64, 32, true}, three_of_four);
  ASSERT_FALSE(bad_mask.ok());
  EXPECT_THAT(std::string(bad_mask.status().message()), ::testing::HasSubstr("more than 2 of 4"));
}

TEST(CpuDispatchTest, ParsesPathsAndSelectsOne) {
  EXPECT_FALSE(ParseCpuPath("sse9").ok());
  ASSERT_OK_AND_ASSIGN(const CpuKernels* selected, SelectedKernels());
  EXPECT_NE(selected, nullptr);
  ASSERT_OK_AND_ASSIGN(const CpuKernels* scalar, KernelsFor(CpuPath::kScalar));
  EXPECT_STREQ(scalar->name, "scalar");
  ASSERT_OK_AND_ASSIGN(const CpuPath vnni, ParseCpuPath("avx2-vnni"));
  if (auto k = KernelsFor(vnni); k.ok()) {
    EXPECT_STREQ((*k)->name, "avx2-vnni");
  }
}

}  // namespace
}  // namespace accllm

namespace accllm {
namespace {

// Float kernels add in one order on every path (runtime/common/lane_sum.h): each path equals the
// scalar path bit for bit, and the scalar path is held to a double-precision result.
template <typename T>
void ExpectBitIdentical(const std::vector<T>& got, const std::vector<T>& want) {
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(T)), 0);
}

TEST(Kv4KernelTest, EveryPathMatchesScalar) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int head_size : {8, 32, 64, 128}) {
    const int count = 13;
    std::vector<float> q(head_size), p(count);
    for (float& v : q) v = normal(rng);
    for (float& v : p) v = std::fabs(normal(rng));
    std::vector<uint8_t> codes(static_cast<std::size_t>(count) * head_size / 2);
    std::vector<Kv4Params> params(count);
    for (int i = 0; i < count; ++i) {
      std::vector<float> x(head_size);
      for (float& v : x) v = normal(rng);
      params[i] = QuantizeKv4(x, codes.data() + i * head_size / 2);
    }
    float q_sum = 0;
    for (float v : q) q_sum += v;
    std::vector<float> want_scores(count), want_out(head_size, 0.5f);
    Kv4ScoreScalar(q.data(), q_sum, codes.data(), params.data(), count, head_size, 0.125f, want_scores.data());
    const float want_min = Kv4AccumulateScalar(want_out.data(), p.data(), codes.data(), params.data(), count, head_size);
    // The scalar path against the codes dequantized and summed in double precision.
    std::vector<double> exact_out(head_size, 0.5);
    for (int i = 0; i < count; ++i) {
      const double scale = Fp16ToFloat(params[i].scale), min = Fp16ToFloat(params[i].min);
      double dot = 0;
      for (int d = 0; d < head_size; ++d) {
        const int code = (codes[i * head_size / 2 + d / 2] >> (4 * (d % 2))) & 15;
        dot += double{q[d]} * (min + scale * code);
        exact_out[d] += double{p[i]} * scale * code;
      }
      EXPECT_NEAR(want_scores[i], 0.125 * dot, 1e-4 * (1 + std::fabs(dot)));
    }
    for (int d = 0; d < head_size; ++d) EXPECT_NEAR(want_out[d], exact_out[d], 1e-4 * (1 + std::fabs(exact_out[d])));
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(std::string(k->name) + " head size " + std::to_string(head_size));
      std::vector<float> scores(count), out(head_size, 0.5f);
      k->kv4_score(q.data(), q_sum, codes.data(), params.data(), count, head_size, 0.125f, scores.data());
      const float min_sum = k->kv4_accumulate(out.data(), p.data(), codes.data(), params.data(), count, head_size);
      ExpectBitIdentical(scores, want_scores);
      ExpectBitIdentical(out, want_out);
      EXPECT_EQ(min_sum, want_min);
    }
  }
}

// Every path's KV4 quantization gives QuantizeKv4's codes and parameters, bit for bit: random
// heads, outliers, constant and all-zero vectors, zeros of both signs as the minimum (which of
// them wins depends on the lanes the extremes are kept in), values past fp16's range, and head
// sizes the SIMD paths leave to the scalar code.
TEST(Kv4KernelTest, QuantizeMatchesScalarOnEveryPath) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int head_size : {8, 16, 48, 64, 128, 256}) {
    std::vector<std::vector<float>> heads;
    for (int i = 0; i < 20; ++i) {
      std::vector<float> x(head_size);
      for (float& v : x) v = normal(rng);
      heads.push_back(x);
    }
    std::vector<float> outlier = heads[0];
    outlier[head_size / 3] = 40.0f;
    heads.push_back(outlier);
    heads.push_back(std::vector<float>(head_size, 0.75f));
    heads.push_back(std::vector<float>(head_size, 0.0f));
    std::vector<float> signed_zeros(head_size);
    for (int d = 0; d < head_size; ++d) signed_zeros[d] = d % 5 == 0 ? 1.5f : (d % 3 == 0 ? -0.0f : 0.0f);
    heads.push_back(signed_zeros);
    for (float& v : signed_zeros) v = v == 0.0f ? -v : v;  // the other sign at each zero
    heads.push_back(signed_zeros);
    std::vector<float> huge = heads[1];
    for (float& v : huge) v *= 1e5f;
    heads.push_back(huge);
    for (std::size_t h = 0; h < heads.size(); ++h) {
      std::vector<uint8_t> want(head_size / 2);
      const Kv4Params want_params = QuantizeKv4(heads[h], want.data());
      for (const CpuKernels* k : AvailableKernels()) {
        SCOPED_TRACE(std::string(k->name) + " head size " + std::to_string(head_size) + " vector " + std::to_string(h));
        std::vector<uint8_t> codes(head_size / 2, 0xAA);
        const Kv4Params params = k->kv4_quantize(heads[h], codes.data());
        EXPECT_EQ(codes, want);
        EXPECT_EQ(params.scale, want_params.scale);
        EXPECT_EQ(params.min, want_params.min);
      }
    }
  }
}

}  // namespace
}  // namespace accllm

namespace accllm {
namespace {

// The dense fp16/fp32 matmuls against a double-precision product, over shapes that leave tails
// in every blocking dimension (rows, tokens, columns).
TEST(DenseKernelTest, EveryPathComputesTheProduct) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& [rows, cols, tokens] : {std::tuple{1, 8, 1}, {7, 37, 5}, {70, 64, 9}, {131, 200, 4}}) {
    std::vector<float> w(static_cast<std::size_t>(rows) * cols), x(static_cast<std::size_t>(tokens) * (cols + 3));
    std::vector<uint16_t> w16(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      w16[i] = FloatToFp16(normal(rng));
      w[i] = Fp16ToFloat(w16[i]);  // the same weights at both precisions
    }
    for (float& v : x) v = normal(rng);
    const int64_t ldx = cols + 3, ldy = rows + 2;
    std::vector<double> want(static_cast<std::size_t>(tokens) * ldy, 0.0);
    for (int t = 0; t < tokens; ++t) {
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < cols; ++c) want[t * ldy + r] += double{w[r * cols + c]} * x[t * ldx + c];
      }
    }
    std::vector<float> scalar32(want.size(), -7.0f), scalar16(want.size(), -7.0f);
    kScalarKernels.matmul_f32(w.data(), cols, x.data(), tokens, ldx, 0, rows, scalar32.data(), ldy);
    kScalarKernels.matmul_f16(w16.data(), cols, x.data(), tokens, ldx, 0, rows, scalar16.data(), ldy);
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(std::string(k->name) + " " + std::to_string(rows) + "x" + std::to_string(cols) + ", " +
                   std::to_string(tokens) + " tokens");
      std::vector<float> y32(want.size(), -7.0f), y16(want.size(), -7.0f);
      // Two row ranges, as the thread pool splits them.
      k->matmul_f32(w.data(), cols, x.data(), tokens, ldx, 0, rows / 2, y32.data(), ldy);
      k->matmul_f32(w.data(), cols, x.data(), tokens, ldx, rows / 2, rows, y32.data(), ldy);
      k->matmul_f16(w16.data(), cols, x.data(), tokens, ldx, 0, rows, y16.data(), ldy);
      for (int t = 0; t < tokens; ++t) {
        for (int r = 0; r < ldy; ++r) {
          const std::size_t i = t * ldy + r;
          if (r >= rows) {  // padding between rows is not written
            EXPECT_EQ(y32[i], -7.0f);
            continue;
          }
          EXPECT_NEAR(y32[i], want[i], 1e-4 * (1 + std::fabs(want[i])));
          EXPECT_NEAR(y16[i], want[i], 1e-4 * (1 + std::fabs(want[i])));
        }
      }
      ExpectBitIdentical(y32, scalar32);
      ExpectBitIdentical(y16, scalar16);
    }
  }
}

TEST(F32AttentionKernelTest, EveryPathMatchesScalar) {
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int head_size : {6, 8, 32, 64, 128}) {
    const int count = 11;
    std::vector<float> q(head_size), p(count), keys(count * head_size), values(count * head_size);
    for (auto* v : {&q, &p, &keys, &values}) {
      for (float& e : *v) e = normal(rng);
    }
    std::vector<float> want_scores(count), want_out(head_size, 0.25f);
    for (int i = 0; i < count; ++i) {
      double dot = 0;
      for (int d = 0; d < head_size; ++d) dot += double{q[d]} * keys[i * head_size + d];
      want_scores[i] = static_cast<float>(dot * 0.5);
      for (int d = 0; d < head_size; ++d) want_out[d] += p[i] * values[i * head_size + d];
    }
    std::vector<float> scalar_scores(count), scalar_out(head_size, 0.25f);
    kScalarKernels.f32_score(q.data(), keys.data(), count, head_size, 0.5f, scalar_scores.data());
    kScalarKernels.f32_accumulate(scalar_out.data(), head_size, p.data(), count, 1, values.data(), count, head_size);
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(std::string(k->name) + " head size " + std::to_string(head_size));
      std::vector<float> scores(count), out(head_size, 0.25f);
      k->f32_score(q.data(), keys.data(), count, head_size, 0.5f, scores.data());
      k->f32_accumulate(out.data(), head_size, p.data(), count, 1, values.data(), count, head_size);
      for (int i = 0; i < count; ++i) EXPECT_NEAR(scores[i], want_scores[i], 1e-4f * (1 + std::fabs(want_scores[i])));
      for (int d = 0; d < head_size; ++d) EXPECT_NEAR(out[d], want_out[d], 1e-4f * (1 + std::fabs(want_out[d])));
      ExpectBitIdentical(scores, scalar_scores);
      ExpectBitIdentical(out, scalar_out);
    }
  }
}

TEST(ReadSumKernelTest, EveryPathSumsTheWords) {
  std::vector<uint8_t> data(4096);
  uint64_t expected = 0;
  for (std::size_t i = 0; i < data.size(); i += 8) {
    const uint64_t word = i * 2654435761u;
    std::memcpy(&data[i], &word, 8);
    expected += word;
  }
  for (const CpuKernels* k : AvailableKernels()) EXPECT_EQ(k->read_sum(data.data(), 4096), expected) << k->name;
}

TEST(HadamardKernelTest, EveryPathMatchesScalarAndIsItsOwnInverse) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int n : {1, 2, 4, 8, 16, 32, 64, 128, 512}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng);
    std::vector<float> expected = x;
    Hadamard(expected.data(), n);
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n));
      std::vector<float> y = x;
      k->hadamard(y.data(), n);
      ExpectBitIdentical(y, expected);
      k->hadamard(y.data(), n);
      for (int i = 0; i < n; ++i) EXPECT_NEAR(y[i], x[i], 1e-5f) << "i=" << i;
    }
  }
}

TEST(Kv4QuantizeTest, CodesSpanTheVectorsRange) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x(64);
    for (float& v : x) v = normal(rng);
    uint8_t codes[32];
    const Kv4Params p = QuantizeKv4(x, codes);
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    EXPECT_EQ(p.min, FloatToFp16(*lo));
    const float min = Fp16ToFloat(p.min), scale = Fp16ToFloat(p.scale);
    EXPECT_EQ(p.scale, FloatToFp16((*hi - min) / 15.0f));
    for (int i = 0; i < 64; ++i) {
      const int code = (codes[i / 2] >> (4 * (i % 2))) & 15;
      const float nearest = std::clamp(std::nearbyint((x[i] - min) * (1.0f / scale)), 0.0f, 15.0f);
      EXPECT_EQ(code, static_cast<int>(nearest)) << "trial " << trial << " element " << i;
    }
  }
}

TEST(ExpTest, WithinOneUlpOfTheLibraryAndExactAtTheEdges) {
  const auto ulps = [](float a, float b) {
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return std::abs(ia - ib);
  };
  int worst = 0;
  for (float x = kExpMinArgument; x <= kExpMaxArgument; x += 0.0137f) worst = std::max(worst, ulps(Exp(x), std::exp(x)));
  EXPECT_LE(worst, 1);
  EXPECT_EQ(Exp(0.0f), 1.0f);
  EXPECT_EQ(Exp(-1000.0f), 0.0f);
  EXPECT_EQ(Exp(1000.0f), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(Exp(std::numeric_limits<float>::quiet_NaN())));
}

// Scores and gate values over the whole range: underflowing and overflowing exponentials, NaN.
std::vector<float> WideValues(int n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 8.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  if (n > 3) {
    x[1] = -200.0f;
    x[2] = 120.0f;
  }
  return x;
}

TEST(SoftmaxKernelTest, EveryPathMatchesScalar) {
  std::mt19937 rng(3);
  for (int n : {1, 3, 8, 15, 64, 100, 257}) {
    const std::vector<float> x = WideValues(n, rng);
    std::vector<float> expected = x;
    Softmax(expected.data(), n);
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n));
      std::vector<float> y = x;
      k->softmax(y.data(), n);
      ExpectBitIdentical(y, expected);
    }
  }
}

TEST(SwiGluKernelTest, EveryPathMatchesScalar) {
  std::mt19937 rng(5);
  for (int n : {1, 7, 8, 31, 64, 100, 512, 4100}) {
    std::vector<float> h = WideValues(n, rng), h2 = WideValues(n, rng);
    if (n > 4) h[3] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> expected = h;
    SwiGlu(expected.data(), h2.data(), n);
    for (const CpuKernels* k : AvailableKernels()) {
      std::vector<float> y = h;
      k->swiglu(y.data(), h2.data(), n);
      for (int i = 0; i < n; ++i) {  // a NaN's sign and payload depend on the operand order the compiler picked
        if (std::isnan(expected[i])) {
          EXPECT_TRUE(std::isnan(y[i])) << k->name << " n=" << n << " i=" << i;
        } else {
          EXPECT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(expected[i])) << k->name << " n=" << n << " i=" << i;
        }
      }
    }
  }
}

// RoPE on every path against RopeAngles::Apply: head sizes whose halves are and are not multiples
// of its four-pair step, several heads, a partial last head, and large positions.
TEST(RopeKernelTest, EveryPathMatchesScalar) {
  std::mt19937 rng(10);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int head_size : {2, 8, 12, 64, 128}) {
    for (int n : {head_size, 4 * head_size, 4 * head_size - 2, 3 * head_size + 6}) {
      for (int pos : {0, 7, 100000}) {
        RopeAngles angles;
        angles.Compute(head_size, pos, 10000.0f);
        std::vector<float> x(n);
        for (float& v : x) v = normal(rng);
        std::vector<float> want = x;
        angles.Apply(want.data(), n);
        for (const CpuKernels* k : AvailableKernels()) {
          SCOPED_TRACE(std::string(k->name) + " head " + std::to_string(head_size) + " n=" + std::to_string(n));
          std::vector<float> got = x;
          k->rope(got.data(), n, angles.cos.data(), angles.sin.data(), head_size / 2);
          ExpectBitIdentical(got, want);
        }
      }
    }
  }
}

// The norm before each layer's projections: residual added, squares in 64 lanes, and the output
// written over the residual's buffer, as the engine calls it; sizes around the 8- and 64-value
// steps, without a residual too. Many vectors per size: a sum added in another order usually
// differs in its last bit only, which the reciprocal square root then keeps or rounds away.
TEST(ResidualRmsNormKernelTest, EveryPathMatchesScalar) {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<int> sizes;
  for (int n : {1, 7, 8, 63, 64, 65, 100, 512, 4096, 4099}) sizes.insert(sizes.end(), n < 64 ? 1 : 40, n);
  for (int n : sizes) {
    std::vector<float> x(n), residual(n), weight(n);
    for (float& v : x) v = normal(rng);
    for (float& v : residual) v = normal(rng);
    for (float& v : weight) v = normal(rng);
    for (bool add : {true, false}) {
      std::vector<float> want_x = x, want_o = residual;
      for (int d = 0; d < n && add; ++d) want_x[d] += residual[d];
      RmsNorm(want_o.data(), want_x.data(), weight.data(), n, 1e-5f);
      for (const CpuKernels* k : AvailableKernels()) {
        SCOPED_TRACE(std::string(k->name) + " n=" + std::to_string(n) + (add ? " with residual" : ""));
        std::vector<float> got_x = x, got_o = residual;
        k->residual_rms_norm(got_x.data(), add ? got_o.data() : nullptr, got_o.data(), weight.data(), n, 1e-5f);
        ExpectBitIdentical(got_x, want_x);
        ExpectBitIdentical(got_o, want_o);
      }
    }
  }
}

}  // namespace
}  // namespace accllm
