// C simulation of the accelerator's kernels (fpga/kernels, compiled with g++): bit-identical to
// the CPU engine's kernels and element-wise ops on random inputs and on stories260K's layers; and
// the fpga-sim device generates the CPU engine's tokens.
#include <algorithm>
#include <cstring>
#include <random>

#include "fpga/kernels/elementwise.h"
#include "fpga/kernels/hls_compat.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/host/stripe_plan.h"
#include "fpga/kernels/w2a8_engine.h"
#include "fpga/kernels/w2a8_unit.h"
#include "fpga/kernels/w8a8_engine.h"
#include "fpga/sim/fpga_sim_backend.h"
#include "gmock/gmock.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/lane_sum.h"
#include "runtime/common/half.h"
#include "runtime/common/nn_ops.h"
#include "runtime/cpu/kernels.h"
#include "runtime/generate/generator.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/a8.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/w2.h"
#include "runtime/quant/w8.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::accllm::testing::ScratchDir;

template <typename T>
bool SameBits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<float> Normal(std::size_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (float& e : v) e = normal(rng);
  return v;
}

// The W2A8 engine with T token lanes over the whole matrix, as the host calls it: the tokens in
// calls of at most T.
template <int T>
void RunEngineWithLanes(const W2View& w, const A8Batch& x, float* y, int64_t ldy) {
  for (int t0 = 0; t0 < x.tokens(); t0 += T) {
    hls::W2A8Engine<T>(reinterpret_cast<const hls::Beat*>(w.codes), reinterpret_cast<const hls::Beat*>(w.sparse_index),
                       w.scales, w.zeros, x.codes(t0), x.group_sums(t0), x.scales() + t0, y + t0 * ldy, w.shape.rows,
                       w.shape.cols_padded(), w.shape.group_size, w.shape.sparse24, std::min(T, x.tokens() - t0),
                       static_cast<int>(ldy), 0, w.shape.row_tiles());
  }
}

template <typename T>
uint64_t Address(const T* p) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
}

// The compute units as the sequencer drives them (the build's T): one kW2A8 command down a chain
// of three units, each over its stripe of the layer (fpga/host/stripe_plan.h's split).
void RunEngine(const W2View& w, const A8Batch& x, float* y, int64_t ldy) {
  constexpr int kUnits = 3;
  std::vector<uint64_t> table;  // per unit: codes, 2:4 index, scales, zeros
  for (const fpga::Stripe& s : fpga::PlanStripes(w.shape, kUnits)) {
    table.insert(table.end(), {Address(w.codes + s.code_offset),
                               w.sparse_index != nullptr ? Address(w.sparse_index + s.code_offset) : 0,
                               Address(w.scales + s.param_offset), Address(w.zeros + s.param_offset)});
  }
  hls::StepDescriptor d;
  d.op = hls::StepOp::kW2A8;
  d.tokens = x.tokens();
  d.n[0] = w.shape.rows;
  d.n[1] = w.shape.cols_padded();
  d.n[2] = w.shape.group_size;
  d.n[3] = w.shape.sparse24 ? 1 : 0;
  d.n[4] = static_cast<int32_t>(ldy);
  d.n[5] = kUnits;
  d.p[0] = Address(table.data());
  d.p[1] = Address(x.codes(0));
  d.p[2] = Address(x.group_sums(0));
  d.p[3] = Address(x.scales());
  d.p[4] = Address(y);
  hls::CommandStream commands, returned;
  hls::TokenStream seed, done;
  hls::ChainEnds ends{commands, returned, seed, done};
  const int units_done = hls::RunOnChain(
      d, kUnits, ends, [](hls::CommandStream& in, hls::CommandStream& out, hls::TokenStream& done_in,
                          hls::TokenStream& done_out) {
        EXPECT_TRUE(hls::ServeW2A8Command(hls::W2A8UnitPorts{}, in, out, done_in, done_out));
      });
  EXPECT_EQ(units_done, kUnits);
}

TEST(FpgaKernelTest, HalfConverterIsExactForEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = hls::HalfToFloat(static_cast<uint16_t>(h)), b = Fp16ToFloat(static_cast<uint16_t>(h));
    ASSERT_EQ(std::memcmp(&a, &b, sizeof a), 0) << "fp16 bits " << h;
  }
}

struct EngineCase {
  int rows, cols, group_size, tokens;
  bool sparse;
};

class W2A8EngineTest : public ::testing::TestWithParam<EngineCase> {};

TEST_P(W2A8EngineTest, BitExactAgainstTheCpuKernels) {
  const EngineCase c = GetParam();
  std::mt19937 rng(c.rows * 131 + c.cols * 7 + c.group_size + c.tokens * 3 + c.sparse);
  const W2Shape shape{c.rows, c.cols, c.group_size, c.sparse};
  std::vector<uint8_t> keep;
  if (c.sparse) {
    keep.assign(static_cast<std::size_t>(c.rows) * c.cols, 0);
    for (std::size_t i = 0; i < keep.size(); i += 4) {
      const int a = static_cast<int>(rng() % 4);
      int b = static_cast<int>(rng() % 3);
      if (b >= a) ++b;
      keep[i + a] = keep[i + b] = 1;
    }
  }
  ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(Normal(static_cast<std::size_t>(c.rows) * c.cols, 0.02f, rng), shape, keep));
  A8Batch x(shape.cols_padded(), shape.group_size, c.tokens);
  for (int t = 0; t < c.tokens; ++t) x.Quantize(t, Normal(c.cols, 1.0f, rng));

  const int64_t ldy = c.rows + 5;
  std::vector<float> cpu(static_cast<std::size_t>(ldy) * c.tokens, -7.0f), fpga = cpu;
  kScalarKernels.matmul_w2a8(m.view(), x, 0, shape.row_tiles(), cpu.data(), ldy);
  RunEngine(m.view(), x, fpga.data(), ldy);
  EXPECT_TRUE(SameBits(cpu, fpga));  // padding outside `rows` untouched by both
  // Both token-lane builds (4 and 8): a call's tokens share each weight beat, results unchanged.
  for (auto run : {&RunEngineWithLanes<4>, &RunEngineWithLanes<8>}) {
    std::vector<float> lanes(cpu.size(), -7.0f);
    run(m.view(), x, lanes.data(), ldy);
    EXPECT_TRUE(SameBits(cpu, lanes));
  }
  // The best CPU path too (it is what the CPU engine runs here).
  ASSERT_OK_AND_ASSIGN(const CpuKernels* best, SelectedKernels());
  std::vector<float> host(cpu.size(), -7.0f);
  best->matmul_w2a8(m.view(), x, 0, shape.row_tiles(), host.data(), ldy);
  EXPECT_TRUE(SameBits(host, fpga)) << best->name;
}

INSTANTIATE_TEST_SUITE_P(RandomShapes, W2A8EngineTest,
                         ::testing::Values(EngineCase{16, 128, 128, 1, false}, EngineCase{37, 96, 32, 3, false},
                                           EngineCase{64, 256, 64, 5, true}, EngineCase{5, 40, 32, 2, true},
                                           EngineCase{130, 512, 128, 1, true}, EngineCase{48, 1000, 256, 4, false},
                                           EngineCase{33, 64, 32, 64, false}, EngineCase{40, 256, 64, 8, true},
                                           EngineCase{17, 128, 128, 13, false}));

// The units' 8-bit mode (the W8 classifier) against the CPU's W8A8 kernel, with 4 and 8 token
// lanes, ragged rows, in calls of at most T tokens.
TEST(FpgaKernelTest, W8A8ModeBitExactAgainstTheCpuKernels) {
  std::mt19937 rng(9);
  for (const auto& c : {std::tuple{37, 256, 1}, {64, 512, 5}, {300, 384, 13}}) {
    // Plain locals, not a structured binding: clang before 16 cannot capture bindings in lambdas.
    const int rows = std::get<0>(c), cols = std::get<1>(c), tokens = std::get<2>(c);
    const W8Shape shape{rows, cols, 128};
    std::vector<uint16_t> f16;
    for (float v : Normal(static_cast<std::size_t>(rows) * cols, 0.05f, rng)) f16.push_back(FloatToFp16(v));
    ASSERT_OK_AND_ASSIGN(W8Matrix m, QuantizeW8(f16, shape));
    A8Batch x(shape.cols_padded(), shape.group_size, tokens);
    for (int t = 0; t < tokens; ++t) x.Quantize(t, Normal(cols, 1.0f, rng));
    const int64_t ldy = rows + 3;
    std::vector<float> cpu(static_cast<std::size_t>(ldy) * tokens, -7.0f), four = cpu, eight = cpu;
    kScalarKernels.matmul_w8a8(m.view(), x, 0, shape.row_tiles(), cpu.data(), ldy);
    const auto run = [&]<int T>(std::vector<float>& y) {
      for (int t0 = 0; t0 < tokens; t0 += T) {
        hls::W8A8Engine<T>(reinterpret_cast<const hls::Beat*>(m.codes.data()), m.scales.data(), x.codes(t0),
                           x.scales() + t0, y.data() + t0 * ldy, rows, shape.cols_padded(), shape.group_size,
                           std::min(T, tokens - t0), static_cast<int>(ldy), 0, shape.row_tiles());
      }
    };
    run.operator()<4>(four);
    run.operator()<8>(eight);
    EXPECT_TRUE(SameBits(cpu, four)) << rows << "x" << cols << " t" << tokens;
    EXPECT_TRUE(SameBits(cpu, eight)) << rows << "x" << cols << " t" << tokens;
  }
}

TEST(FpgaKernelTest, Kv4UnitsAndAttentionBitExact) {
  std::mt19937 rng(5);
  for (int head_size : {8, 32, 48, 128}) {
    const int count = 37;
    std::vector<uint8_t> key_codes(static_cast<std::size_t>(count) * head_size / 2),
        value_codes(key_codes.size());
    std::vector<Kv4Params> key_params(count), value_params(count);
    for (int i = 0; i < count; ++i) {
      key_params[i] = QuantizeKv4(Normal(head_size, 1.0f, rng), key_codes.data() + i * head_size / 2);
      value_params[i] = QuantizeKv4(Normal(head_size, 1.0f, rng), value_codes.data() + i * head_size / 2);
    }
    const std::vector<float> q = Normal(head_size, 1.0f, rng), q_sink = Normal(head_size, 1.0f, rng);
    // The queries' sums as the CPU engine takes them (cpu_attention.cc).
    const float q_sum = LaneSum(q.data(), head_size), sink_sum = LaneSum(q_sink.data(), head_size);
    const auto* hk = reinterpret_cast<const hls::Kv4Param*>(key_params.data());
    const auto* hv = reinterpret_cast<const hls::Kv4Param*>(value_params.data());
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_size));

    // The units against the CPU's scalar kernels.
    std::vector<float> cpu_scores(count), fpga_scores(count);
    Kv4ScoreScalar(q.data(), q_sum, key_codes.data(), key_params.data(), count, head_size, scale, cpu_scores.data());
    hls::Kv4Score(q.data(), q_sum, key_codes.data(), hk, count, head_size, scale, fpga_scores.data());
    EXPECT_TRUE(SameBits(cpu_scores, fpga_scores)) << head_size;
    std::vector<float> cpu_out(head_size, 0.5f), fpga_out = cpu_out;
    const float cpu_min = Kv4AccumulateScalar(cpu_out.data(), cpu_scores.data(), value_codes.data(),
                                              value_params.data(), count, head_size);
    const float fpga_min = hls::Kv4Accumulate(fpga_out.data(), cpu_scores.data(), value_codes.data(), hv, count, head_size);
    EXPECT_TRUE(SameBits(cpu_out, fpga_out));
    EXPECT_EQ(std::memcmp(&cpu_min, &fpga_min, sizeof cpu_min), 0);

    // The batched kernel, two items against the CPU engine's composition of the same steps, over
    // the cache as a card places it: pages of 8 vectors striped over the four KV channels, this
    // layer's vectors from 40 on. Item 0 has a sink run (vectors 0-3) and four window runs, one
    // in each channel; item 1 the window runs only.
    const std::vector<int32_t> start = {0, 10, 16, 25, 32, 10, 16, 25, 32}, run = {4, 6, 8, 7, 5, 6, 8, 7, 5};
    const std::vector<int32_t> item_runs = {0, 5, 9}, item_sinks = {1, 0};
    std::vector<float> expected;
    for (int item = 0; item < 2; ++item) {
      const int first = item_runs[item], sinks = item_sinks[item];
      std::vector<float> scores;
      for (int r = first; r < item_runs[item + 1]; ++r) {
        const bool sink = r - first < sinks;
        scores.resize(scores.size() + run[r]);
        Kv4ScoreScalar(sink ? q_sink.data() : q.data(), sink ? sink_sum : q_sum,
                       key_codes.data() + start[r] * head_size / 2, &key_params[start[r]], run[r], head_size, scale,
                       &scores[scores.size() - run[r]]);
      }
      Softmax(scores.data(), static_cast<int>(scores.size()));
      std::vector<float> out(head_size, 0.0f);
      float min_sum = 0;
      for (int r = first, index = 0; r < item_runs[item + 1]; index += run[r], ++r) {
        min_sum += Kv4AccumulateScalar(out.data(), &scores[index], value_codes.data() + start[r] * head_size / 2,
                                       &value_params[start[r]], run[r], head_size);
      }
      for (float& e : out) expected.push_back(e + min_sum);
    }
    constexpr int kPageTokens = 8, kFirstVector = 40, kChannelVectors = 3 * kPageTokens;  // 10 blocks over 4
    hls::KvChannels kv{};
    std::vector<uint8_t> channels[hls::kKvChannels];
    int64_t offset = 0;
    for (int r = 0; r < 4; ++r) {
      kv.region_offset[r] = offset;
      offset += kChannelVectors * hls::KvVectorBytes(r, head_size);
    }
    for (int c = 0; c < hls::kKvChannels; ++c) {
      channels[c].assign(static_cast<std::size_t>(offset), 0xAB);
      kv.channel[c] = channels[c].data();
    }
    kv.page_tokens = kPageTokens;
    kv.first_vector = kFirstVector;
    for (int i = 0; i < count; ++i) {
      std::memcpy(kv.Vector<uint8_t>(0, head_size, i), key_codes.data() + i * head_size / 2, head_size / 2);
      std::memcpy(kv.Vector<uint8_t>(1, head_size, i), &key_params[i], 4);
      std::memcpy(kv.Vector<uint8_t>(2, head_size, i), value_codes.data() + i * head_size / 2, head_size / 2);
      std::memcpy(kv.Vector<uint8_t>(3, head_size, i), &value_params[i], 4);
    }
    std::vector<float> queries = q, sink_queries = q_sink, got(2 * head_size);
    queries.insert(queries.end(), q.begin(), q.end());
    sink_queries.insert(sink_queries.end(), q_sink.begin(), q_sink.end());
    hls::Kv4Attention(queries.data(), sink_queries.data(), item_runs.data(), item_sinks.data(), 2, kv, start.data(),
                      run.data(), head_size, got.data());
    EXPECT_TRUE(SameBits(got, expected)) << head_size;
  }
}

TEST(FpgaKernelTest, ElementwiseUnitsBitExact) {
  std::mt19937 rng(11);
  for (int size : {64, 200, 4096}) {
    const std::vector<float> x = Normal(size, 3.0f, rng), weight = Normal(size, 1.0f, rng);
    for (int group_size : {32, 128}) {
      const int cols_padded = (size + group_size - 1) / group_size * group_size;
      std::vector<float> normalized(size);
      RmsNorm(normalized.data(), x.data(), weight.data(), size, 1e-5f);
      A8Batch expected(cols_padded, group_size, 1);
      expected.Quantize(0, normalized);
      std::vector<int8_t> codes(cols_padded, 99);
      std::vector<int32_t> sums(cols_padded / group_size);
      float scale = 0;
      accllm_rmsnorm_a8(x.data(), weight.data(), size, 1e-5f, cols_padded, group_size, codes.data(), &scale, sums.data());
      EXPECT_EQ(std::memcmp(codes.data(), expected.codes(0), cols_padded), 0) << size << "/" << group_size;
      EXPECT_EQ(std::memcmp(sums.data(), expected.group_sums(0), sums.size() * 4), 0);
      EXPECT_EQ(scale, expected.scale(0));
    }
    std::vector<float> a = x, b = x;
    Rope(a.data(), size, 32, 77, 10000.0f);
    accllm_rope(b.data(), size, 32, 77, 10000.0f);
    EXPECT_TRUE(SameBits(a, b));
    a = x;
    b = x;
    SwiGlu(a.data(), weight.data(), size);
    accllm_swiglu(b.data(), weight.data(), size);
    EXPECT_TRUE(SameBits(a, b));
    for (int n : {2, 4, 8, 16, 32, 64, 128, 256}) {  // one pass of 1-4 stages up to two passes
      a = x;
      b = x;
      for (int v = 0; v < size / n; ++v) Hadamard(&a[v * n], n);
      accllm_hadamard(b.data(), n, size / n);
      EXPECT_TRUE(SameBits(a, b)) << n;
    }
  }
}

// stories260K quantized as the product would (W2 group 32, 2:4 on the FFN layers).
class FpgaStoriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(model_, LoadModel(RequireModelFile("stories260K.bin").string()));
    QuantizeOptions options;
    options.group_size = 32;
    options.method = QuantMethod::kRtn;
    options.prune = PruneMethod::kMagnitude;
    options.prune_layers = "ffn";
    options.source = "stories260K.bin";
    ASSERT_OK_AND_ASSIGN(packed_, QuantizeModel(*model_, options, nullptr, nullptr));
  }
  std::unique_ptr<Model> model_;
  PackedContents packed_;
};

TEST_F(FpgaStoriesTest, EveryLayerBitExact) {
  std::mt19937 rng(3);
  int sparse_layers = 0;
  for (const auto& [id, matrix] : packed_.linears) {
    const W2View w = matrix.view();
    sparse_layers += w.shape.sparse24;
    A8Batch x(w.shape.cols_padded(), w.shape.group_size, 4);
    for (int t = 0; t < 4; ++t) x.Quantize(t, Normal(w.shape.cols, 1.0f, rng));
    std::vector<float> cpu(static_cast<std::size_t>(w.shape.rows) * 4), fpga(cpu.size());
    kScalarKernels.matmul_w2a8(w, x, 0, w.shape.row_tiles(), cpu.data(), w.shape.rows);
    RunEngine(w, x, fpga.data(), w.shape.rows);
    EXPECT_TRUE(SameBits(cpu, fpga)) << HfTensorName(id);
  }
  EXPECT_GT(sparse_layers, 0);
}

TEST_F(FpgaStoriesTest, FpgaSimGeneratesTheCpuEnginesTokens) {
  ScratchDir dir;
  const std::string path = (dir / "s.safetensors").string();
  ASSERT_OK(WritePackedModel(packed_, path));
  ASSERT_OK_AND_ASSIGN(AnyModel model, LoadAnyModel(path, LoadMode::kMap));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  BackendOptions options;
  options.window = 64;  // Λ attention with sinks past position 64
  options.engine = "cpu";
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(options, model));
  ASSERT_OK_AND_ASSIGN(auto fpga, fpga::MakeFpgaSimBackend(options, model));
  EXPECT_THAT(fpga->name(), ::testing::StartsWith("fpga-sim("));
  GenerationOptions g;
  g.sampling.temperature = 0.0f;
  g.max_new_tokens = 150;
  g.ignore_eos = true;
  for (const char* prompt : {"Once upon a time", "Lily and Ben"}) {
    ASSERT_OK_AND_ASSIGN(auto on_cpu, Generator::Create(*cpu, *tokenizer));
    ASSERT_OK_AND_ASSIGN(auto on_fpga, Generator::Create(*fpga, *tokenizer));
    ASSERT_OK_AND_ASSIGN(GenerationResult a, on_cpu->Generate(prompt, g));
    ASSERT_OK_AND_ASSIGN(GenerationResult b, on_fpga->Generate(prompt, g));
    EXPECT_EQ(a.generated_ids, b.generated_ids) << prompt;
    EXPECT_EQ(b.generated_ids.size(), 150u);
  }
  // Past the window (sink runs included), the logits are the same bits, not only the argmax.
  std::vector<int> tokens(100);
  for (int i = 0; i < 100; ++i) tokens[i] = 1 + (i * 37) % 500;
  std::vector<float> cpu_logits(model.config().vocab_size), fpga_logits(cpu_logits.size());
  auto cpu_seq = std::make_unique<SequenceKv>(cpu->page_pool(), cpu->page_tokens(), cpu->lambda());
  auto fpga_seq = std::make_unique<SequenceKv>(fpga->page_pool(), fpga->page_tokens(), fpga->lambda());
  ASSERT_OK(cpu->Prefill(*cpu_seq, tokens, cpu_logits));
  ASSERT_OK(fpga->Prefill(*fpga_seq, tokens, fpga_logits));
  EXPECT_TRUE(SameBits(cpu_logits, fpga_logits));
  // Like the card, fpga-sim takes packed models only.
  ASSERT_OK_AND_ASSIGN(AnyModel fp32, LoadAnyModel(RequireModelFile("stories260K.bin").string(), LoadMode::kMap));
  EXPECT_THAT(std::string(fpga::MakeFpgaSimBackend(options, fp32).status().message()),
              ::testing::HasSubstr("packed W2A8KV4 models only"));
}

}  // namespace
}  // namespace accllm
