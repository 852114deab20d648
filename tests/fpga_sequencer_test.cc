// The layer sequencer in C simulation (fpga/kernels/sequencer.h, fpga/step_program.h): fpga-sim
// runs every step as one sequencer start, gives the CPU engine's logits bit for bit (prefill with
// every logit, batched decode, past a Λ window with sinks), and its units (W2A8, attention,
// element-wise, classifier, the sequencer's own reading) spend the cycles the performance model
// derives from the same shapes.
#include <algorithm>

#include "fpga/host/stripe_plan.h"
#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/sequencer.h"
#include "fpga/kernels/w2a8_engine.h"
#include "fpga/model/perf_model.h"
#include "fpga/model/step_shapes.h"
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

// What unit_cycles.h's CyclesOf gives for the descriptor list of a step of `n` tokens of
// gutenberg30M (from the shapes alone, step_shapes.h), `sink_tokens` of them with sink queries:
// the element-wise units with the sequencer's reading and chain round trips, and the classifier
// unit.
std::pair<int64_t, int64_t> ModelledSequencedCycles(const AnyModel& model, int n, int sink_tokens) {
  fpga::StepShape shape;
  shape.config = model.config();
  shape.group_size = model.packed->linears.begin()->second.shape.group_size;
  shape.w8_classifier = true;  // the engine's default
  shape.tokens = n;
  auto program = fpga::ShapeOnlyProgram(shape);
  EXPECT_TRUE(program.ok()) << program.status();
  int64_t elementwise = 0, classifier = 0;
  for (const hls::StepDescriptor& d : *program) {
    const fpga::DescriptorCycles c = fpga::CyclesOf(d, sink_tokens);
    elementwise += c.elementwise + c.sequencer;
    classifier += c.classifier;
  }
  return {elementwise, classifier};
}

TEST(SequencerTest, SequencedStepsSpendTheModelsUnitCycles) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(AnyModel model, ::accllm::testing::PackedGutenberg30M(dir.path()));
  ASSERT_OK_AND_ASSIGN(std::vector<int> prompt, ::accllm::testing::GutenbergDevPrompt(40));
  const BackendOptions options = Options();
  ASSERT_OK_AND_ASSIGN(auto fpga, fpga::MakeFpgaSimBackend(options, model));
  const EngineWeights weights = model.packed->ToEngineWeights();
  const auto elementwise_and_sequencer = [] {
    return hls::SimulatedCycles(hls::CycleUnit::kElementwise) + hls::SimulatedCycles(hls::CycleUnit::kSequencer);
  };
  auto seq = fpga->NewSequence();
  std::vector<float> logits(model.config().vocab_size);
  hls::ResetSimulatedCycles();
  ASSERT_TRUE(fpga->Prefill(*seq, prompt, logits).ok());
  const int n = static_cast<int>(prompt.size());
  const auto [prefill_w2a8, prefill_attention] = ModelledCycles(weights, *fpga, 0, n);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kW2A8), prefill_w2a8);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kAttention), prefill_attention);
  int sink_tokens = 0;  // the prompt's tokens past the window (32) whose queries also meet the sinks
  for (int pos = 0; pos < n; ++pos) sink_tokens += fpga->lambda().SinkEnd(pos) > 0 ? 1 : 0;
  EXPECT_GT(sink_tokens, 0);
  const auto [prefill_elementwise, prefill_classifier] = ModelledSequencedCycles(model, n, sink_tokens);
  EXPECT_EQ(elementwise_and_sequencer(), prefill_elementwise);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kClassifier), prefill_classifier);

  hls::ResetSimulatedCycles();
  SequenceKv* seqs[] = {seq.get()};
  const int next[] = {5};
  ASSERT_TRUE(fpga->Decode(seqs, next, logits).ok());
  const auto [decode_w2a8, decode_attention] = ModelledCycles(weights, *fpga, static_cast<int64_t>(prompt.size()), 1);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kW2A8), decode_w2a8);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kAttention), decode_attention);
  EXPECT_GT(decode_w2a8, 0);

  // The performance model's decode step, from the same shapes, counts what the C simulation did.
  fpga::Workload work;
  work.config = model.config();
  work.group_size = model.packed->linears.begin()->second.shape.group_size;
  work.context = n + 1;
  work.window = options.window;
  work.sinks = options.sinks;
  work.w8_classifier = true;
  const fpga::Estimate e = fpga::EstimateAccelerator({}, {}, work);
  EXPECT_EQ(e.elementwise_cycles, elementwise_and_sequencer());
  EXPECT_EQ(e.classifier_unit_cycles, hls::SimulatedCycles(hls::CycleUnit::kClassifier));
  EXPECT_GT(e.elementwise_cycles, 0);
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
    const fpga::WeightAddresses nowhere{[](const void*) { return uint64_t{0}; }, [](const W2View&) { return uint64_t{0}; },
                                        [](const W8View&) { return uint64_t{0}; }};
    return fpga::BuildStepProgram(plan, {}, nowhere, fpga::CardUnits{}).status();
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
