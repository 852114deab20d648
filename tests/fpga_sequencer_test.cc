// The layer sequencer in C simulation (fpga/kernels/sequencer.h, fpga/step_program.h): fpga-sim
// runs every step as one sequencer start, gives the CPU engine's logits bit for bit (prefill with
// every logit, batched decode, past a Λ window with sinks), and its units spend the cycles the
// performance model derives from the same shapes.
#include <algorithm>

#include "fpga/host/stripe_plan.h"
#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/sequencer.h"
#include "fpga/kernels/w2a8_engine.h"
#include "fpga/model/unit_cycles.h"
#include "fpga/sim/fpga_sim_backend.h"
#include "fpga/step_program.h"
#include "gmock/gmock.h"
#include "runtime/cpu/kernels.h"
#include "tests/real_model_logits.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ScratchDir;

BackendOptions Options() {
  BackendOptions options;
  options.engine = "cpu";
  options.window = 32;
  options.sinks = 4;
  options.kernels = &kScalarKernels;
  return options;
}

// Prefill with every token's logits, then `steps` batched decode steps of two sequences.
struct StepLogits {
  std::vector<float> prefill;
  std::vector<std::vector<float>> decode;
};

StepLogits Steps(Backend& backend, const std::vector<int>& prompt, int steps) {
  const int vocab = backend.config().vocab_size;
  StepLogits run;
  run.prefill.resize(prompt.size() * vocab);
  auto a = backend.NewSequence(), b = backend.NewSequence();
  EXPECT_TRUE(backend.PrefillEveryLogit(*a, prompt, run.prefill).ok());
  std::vector<float> last(vocab);
  EXPECT_TRUE(backend.Prefill(*b, std::span(prompt).first(prompt.size() / 2), last).ok());
  SequenceKv* seqs[] = {a.get(), b.get()};
  int next[] = {prompt[1], prompt[2]};
  for (int s = 0; s < steps; ++s) {
    std::vector<float> logits(2 * vocab);
    EXPECT_TRUE(backend.Decode(seqs, next, logits).ok());
    for (int i = 0; i < 2; ++i) {
      next[i] = static_cast<int>(std::max_element(logits.begin() + i * vocab, logits.begin() + (i + 1) * vocab) -
                                 (logits.begin() + i * vocab));
    }
    run.decode.push_back(std::move(logits));
  }
  return run;
}

TEST(SequencerTest, OneStartPerStepAndTheCpuEnginesLogitsBitForBit) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(AnyModel model, ::accllm::testing::PackedGutenberg30M(dir.path()));
  ASSERT_OK_AND_ASSIGN(std::vector<int> prompt, ::accllm::testing::GutenbergDevPrompt(48));
  for (const char* classifier : {"w8", "f16"}) {
    SCOPED_TRACE(classifier);
    BackendOptions options = Options();
    options.classifier = classifier;
    ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(options, model));
    ASSERT_OK_AND_ASSIGN(auto fpga, fpga::MakeFpgaSimBackend(options, model));
    constexpr int kDecodeSteps = 6;
    const StepLogits want = Steps(*cpu, prompt, kDecodeSteps);
    const int64_t starts = hls::SequencerStarts();
    const StepLogits got = Steps(*fpga, prompt, kDecodeSteps);
    EXPECT_EQ(hls::SequencerStarts() - starts, 2 + kDecodeSteps);  // two prefills, then the decode steps
    EXPECT_TRUE(got.prefill == want.prefill) << "prefill logits differ";
    ::accllm::testing::ExpectSameLogits(got.decode, want.decode);
  }
}

// What fpga/model/unit_cycles.h derives for one step of `n` tokens of one sequence from
// `first_position`: every linear layer on the 24 W2A8 units' stripes in calls of T tokens, and
// the (token, head) queries in groups of the attention unit's lanes.
std::pair<int64_t, int64_t> ModelledCycles(const EngineWeights& weights, const Backend& backend, int64_t first_position,
                                           int n) {
  int64_t w2a8 = 0, attention = 0;
  const LlamaConfig& c = weights.config;
  for (const EngineLayer& l : weights.layers) {
    for (const LinearWeights* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) {
      const W2Shape& s = w->w2->shape;
      for (const fpga::Stripe& st : fpga::PlanStripes(s, 24)) {
        for (int t0 = 0; t0 < n; t0 += hls::kW2A8TokenLanes) {
          w2a8 += fpga::W2A8CallCycles({s.cols_padded(), s.group_size, s.sparse24, std::min(hls::kW2A8TokenLanes, n - t0),
                                        st.tile_end - st.tile_begin});
        }
      }
    }
    std::vector<fpga::QuerySpan> items;
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < c.n_heads; ++h) items.push_back(fpga::QuerySpanAt(first_position + t, backend.lambda(), backend.page_tokens()));
    }
    for (std::size_t g = 0; g < items.size(); g += hls::kAttentionQueryLanes) {
      attention += fpga::AttentionGroupCycles(
          c.head_size(), std::span(items).subspan(g, std::min<std::size_t>(hls::kAttentionQueryLanes, items.size() - g)));
    }
  }
  return {w2a8, attention};
}

TEST(SequencerTest, SequencedStepsSpendTheModelsUnitCycles) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(AnyModel model, ::accllm::testing::PackedGutenberg30M(dir.path()));
  ASSERT_OK_AND_ASSIGN(std::vector<int> prompt, ::accllm::testing::GutenbergDevPrompt(40));
  ASSERT_OK_AND_ASSIGN(auto fpga, fpga::MakeFpgaSimBackend(Options(), model));
  const EngineWeights weights = model.packed->ToEngineWeights();
  auto seq = fpga->NewSequence();
  std::vector<float> logits(model.config().vocab_size);
  hls::ResetSimulatedCycles();
  ASSERT_TRUE(fpga->Prefill(*seq, prompt, logits).ok());
  const auto [prefill_w2a8, prefill_attention] = ModelledCycles(weights, *fpga, 0, static_cast<int>(prompt.size()));
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kW2A8), prefill_w2a8);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kAttention), prefill_attention);
  hls::ResetSimulatedCycles();
  SequenceKv* seqs[] = {seq.get()};
  const int next[] = {5};
  ASSERT_TRUE(fpga->Decode(seqs, next, logits).ok());
  const auto [decode_w2a8, decode_attention] = ModelledCycles(weights, *fpga, static_cast<int64_t>(prompt.size()), 1);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kW2A8), decode_w2a8);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kAttention), decode_attention);
  EXPECT_GT(decode_w2a8, 0);
}

TEST(SequencerTest, WhatTheUnitsCannotRunIsRefused) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(AnyModel model, ::accllm::testing::PackedGutenberg30M(dir.path()));
  EngineWeights weights = model.packed->ToEngineWeights();
  AttentionBatch runs;
  StepPlan plan;
  plan.weights = &weights;
  plan.attention = &runs;
  const auto build = [&] {
    const fpga::WeightAddresses nowhere{[](const void*) { return uint64_t{0}; }, [](const W2View&) { return uint64_t{0}; }};
    return fpga::BuildStepProgram(plan, {}, nowhere, 24).status();
  };
  weights.config.ffn_hadamard_block = 512;
  EXPECT_THAT(std::string(build().message()), ::testing::HasSubstr("wider than the Hadamard unit"));
  weights.config.ffn_hadamard_block = 0;
  weights.classifier.w8.reset();
  weights.classifier.f16 = nullptr;
  EXPECT_THAT(std::string(build().message()), ::testing::HasSubstr("W8 or fp16 classifier"));
  weights.layers[3].wo.w2.reset();
  EXPECT_EQ(build().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace accllm
