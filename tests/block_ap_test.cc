// Training the quantized model: the layer's backward pass against finite differences of its
// forward pass, the trainable W2 matrix against the codes it starts from, Block-AP on a real model
// (stories260K) lowering every layer's output error, and the end-to-end scale training lowering
// the whole model's divergence from the fp32 one.
#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "runtime/common/nn_ops.h"
#include "runtime/eval/corpus.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/calibration.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/train/block_ap.h"
#include "runtime/quant/train/end_to_end.h"
#include "runtime/quant/train/layer_backprop.h"
#include "runtime/quant/train/trainable_w2.h"
#include "runtime/reference/forward.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;

struct RandomLayer {
  std::vector<std::vector<float>> tensors;  // rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3
  LayerWeights weights{};

  RandomLayer(const LlamaConfig& c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.4f);
    const int64_t d = c.dim, kv = c.kv_dim(), h = c.hidden_dim;
    for (int64_t n : {d, d * d, kv * d, kv * d, d * d, d, h * d, d * h, h * d}) {
      std::vector<float> t(static_cast<std::size_t>(n));
      for (float& v : t) v = normal(rng);
      tensors.push_back(std::move(t));
    }
    for (float& g : tensors[0]) g = 1.0f + 0.2f * g;
    for (float& g : tensors[5]) g = 1.0f + 0.2f * g;
    weights = {tensors[0].data(), tensors[1].data(), tensors[2].data(), tensors[3].data(), tensors[4].data(),
               tensors[5].data(), tensors[6].data(), tensors[7].data(), tensors[8].data()};
  }
};

// sum(y * r): its gradient with respect to y is r.
double Objective(const LlamaConfig& c, const LayerWeights& w, const std::vector<float>& x, int tokens, const std::vector<float>& r) {
  std::vector<float> y(x.size());
  LayerForward(c, w, x.data(), tokens, y.data());
  double sum = 0;
  for (std::size_t i = 0; i < y.size(); ++i) sum += double{y[i]} * r[i];
  return sum;
}

void ExpectGradientsMatchFiniteDifferences(const LlamaConfig& c) {
  RandomLayer layer(c, 7);
  const int tokens = 6;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(tokens) * c.dim), r(x.size());
  for (float& v : x) v = normal(rng);
  for (float& v : r) v = normal(rng);

  LayerActivations saved;
  std::vector<float> y(x.size()), dx(x.size());
  LayerForward(c, layer.weights, x.data(), tokens, y.data(), &saved);
  LayerGradients grads(c, /*with_norm_gains=*/true);
  LayerBackward(c, layer.weights, saved, r.data(), grads, dx.data());

  const float h = 1e-2f;
  auto numeric = [&](float* value) {
    const float kept = *value;
    *value = kept + h;
    const double up = Objective(c, layer.weights, x, tokens, r);
    *value = kept - h;
    const double down = Objective(c, layer.weights, x, tokens, r);
    *value = kept;
    return (up - down) / (2 * h);
  };
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(dx[i], numeric(&x[i]), 2e-2 + 2e-2 * std::abs(dx[i])) << "input " << i;
  }
  const std::vector<float>* analytic[] = {&grads.wq, &grads.wk, &grads.wv,      &grads.wo, &grads.w1,
                                          &grads.w2, &grads.w3, &grads.rms_att, &grads.rms_ffn};
  const int tensor_of[] = {1, 2, 3, 4, 6, 7, 8, 0, 5};
  for (int k = 0; k < 9; ++k) {
    std::vector<float>& w = layer.tensors[tensor_of[k]];
    for (std::size_t i = 0; i < w.size(); i += 5) {
      EXPECT_NEAR((*analytic[k])[i], numeric(&w[i]), 2e-2 + 2e-2 * std::abs((*analytic[k])[i]))
          << "weight " << k << " element " << i;
    }
  }
}

TEST(LayerBackpropTest, GradientsMatchFiniteDifferences) {
  ExpectGradientsMatchFiniteDifferences(::accllm::testing::TinyConfig(true));  // grouped-query attention
}

TEST(LayerBackpropTest, GradientsMatchFiniteDifferencesWithRotatedFfnInput) {
  LlamaConfig c = ::accllm::testing::TinyConfig(true);
  c.hidden_dim = 32;
  c.ffn_hadamard_block = 8;
  ExpectGradientsMatchFiniteDifferences(c);
}

TEST(LayerBackpropTest, ForwardEqualsTheReferenceForwardPass) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> model, LoadModel(RequireModelFile("stories260K.bin").string()));
  const LlamaConfig& c = model->config;
  const std::vector<int> tokens = {1, 403, 407, 261, 378, 285, 400, 261, 430, 324};
  RunState state(c, c.max_seq_len);
  std::vector<float> x(tokens.size() * c.dim), y(x.size());
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    std::copy_n(model->weights.token_embedding + static_cast<std::size_t>(tokens[t]) * c.dim, c.dim, x.begin() + t * c.dim);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    LayerForward(c, model->weights.layers[l], x.data(), static_cast<int>(tokens.size()), y.data());
    x.swap(y);
  }
  // The reference leaves the last position's residual, after the final norm, in state.x.
  for (std::size_t t = 0; t < tokens.size(); ++t) Forward(*model, state, tokens[t], static_cast<int>(t));
  std::vector<float> last(c.dim);
  RmsNorm(last.data(), x.data() + x.size() - c.dim, model->weights.rms_final, c.dim, c.norm_eps);
  EXPECT_THAT(last, ::testing::Pointwise(::testing::FloatNear(1e-4f), std::vector<float>(state.x.begin(), state.x.end())));
}

TEST(TrainableW2Test, StartsFromTheCodesItWasGiven) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (bool sparse : {false, true}) {
    const W2Shape shape{48, 256, 64, sparse};
    std::vector<float> w(static_cast<std::size_t>(shape.rows) * shape.cols);
    for (float& v : w) v = normal(rng);
    std::vector<uint8_t> keep;
    if (sparse) {
      keep.assign(w.size(), 0);
      for (std::size_t i = 0; i < keep.size(); i += 4) keep[i + (i / 4) % 3] = keep[i + 3] = 1;
    }
    ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(w, shape, keep));
    TrainableW2 trainable(m);
    const W2Matrix exported = trainable.Export();
    EXPECT_EQ(exported.codes, m.codes);
    EXPECT_EQ(exported.sparse_index, m.sparse_index);
    EXPECT_EQ(exported.scales, m.scales);
    EXPECT_EQ(exported.zeros, m.zeros);
    std::vector<float> dense(w.size()), row(shape.cols);
    trainable.Dequantize(dense);
    for (int r = 0; r < shape.rows; ++r) {
      DequantizeW2Row(m.view(), r, row);
      ASSERT_THAT(std::vector<float>(dense.begin() + r * shape.cols, dense.begin() + (r + 1) * shape.cols),
                  ::testing::Pointwise(::testing::FloatEq(), row));
    }
  }
}

TEST(TrainableW2Test, StepsMoveWeightsAgainstTheGradientAndKeepPrunedWeightsZero) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const W2Shape shape{16, 128, 64, true};
  std::vector<float> w(static_cast<std::size_t>(shape.rows) * shape.cols);
  for (float& v : w) v = normal(rng);
  std::vector<uint8_t> keep(w.size(), 0);
  for (std::size_t i = 0; i < keep.size(); i += 4) keep[i] = keep[i + 2] = 1;
  ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2(w, shape, keep));
  TrainableW2 trainable(m);
  // Pull every weight toward +10: the quantized weights grow, pruned ones stay 0.
  std::vector<float> before(w.size()), after(w.size()), grad(w.size(), -1.0f);
  trainable.Dequantize(before);
  AdamOptions adam;
  adam.weight_lr = 0.05f;
  adam.scale_lr = 0.01f;
  for (int step = 0; step < 50; ++step) {
    trainable.AccumulateGradient(grad);
    trainable.Step(adam);
  }
  trainable.Dequantize(after);
  double sum_before = 0, sum_after = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (!keep[i]) {
      EXPECT_EQ(after[i], 0.0f);
      continue;
    }
    sum_before += before[i];
    sum_after += after[i];
  }
  EXPECT_GT(sum_after, sum_before + 0.5 * static_cast<double>(w.size()) / 2);
  // What it exports is what it computed (up to the fp16 rounding of the scales).
  const W2Matrix exported = trainable.Export();
  std::vector<float> row(shape.cols);
  for (int r = 0; r < shape.rows; ++r) {
    DequantizeW2Row(exported.view(), r, row);
    for (int col = 0; col < shape.cols; ++col) EXPECT_NEAR(row[col], after[r * shape.cols + col], 2e-3f * (1 + std::abs(row[col])));
  }
}

TEST(BlockApTest, LowersEveryLayersOutputErrorOnARealModel) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> model, LoadModel(RequireModelFile("stories260K.bin").string()));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  ASSERT_OK_AND_ASSIGN(std::vector<std::vector<int>> lines,
                       EncodeLines(RequireSharedFile("data/tinystories-dev.txt").string(), *tokenizer, {0, 6}));
  for (auto& s : lines) s.resize(std::min<std::size_t>(s.size(), model->config.max_seq_len));
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model, lines));
  QuantizeOptions quantize;
  quantize.group_size = 32;
  std::vector<std::vector<float>> positions;
  ASSERT_OK_AND_ASSIGN(PackedContents packed, QuantizeModel(*model, quantize, &stats, nullptr, &positions));
  const PackedContents gptq = packed;
  // Latent weights placed where GPTQ rounded them still give GPTQ's codes.
  ASSERT_EQ(positions.size(), packed.linears.size());
  for (std::size_t i = 0; i < packed.linears.size(); ++i) {
    const W2Matrix& m = packed.linears[i].second;
    EXPECT_EQ(TrainableW2(m, positions[i]).Export().codes, m.codes) << "linear " << i;
  }
  BlockApOptions options;
  options.epochs = 4;
  options.batch_sequences = 1;
  options.adam.weight_lr = 2e-3f;
  options.adam.scale_lr = 2e-3f;
  std::vector<BlockApReport> reports;
  ASSERT_OK(RefineBlocks(*model, lines, options, packed, positions, [&](const BlockApReport& r) { reports.push_back(r); }));
  ASSERT_EQ(reports.size(), static_cast<std::size_t>(model->config.n_layers));
  for (const BlockApReport& r : reports) {
    EXPECT_FALSE(r.kept_original) << "layer " << r.layer;
    EXPECT_LT(r.error_after, r.error_before) << "layer " << r.layer;
    EXPECT_GT(r.target_energy, 0) << "layer " << r.layer;
  }
  int changed = 0;
  for (std::size_t i = 0; i < packed.linears.size(); ++i) changed += packed.linears[i].second.codes != gptq.linears[i].second.codes;
  EXPECT_GT(changed, 0);

  // Steps far too large make every layer worse: each keeps the matrices it was given.
  PackedContents overshot = gptq;
  BlockApOptions reckless = options;
  reckless.epochs = 1;
  reckless.adam.weight_lr = reckless.adam.scale_lr = 1.0f;
  reports.clear();
  ASSERT_OK(RefineBlocks(*model, lines, reckless, overshot, {}, [&](const BlockApReport& r) { reports.push_back(r); }));
  for (const BlockApReport& r : reports) {
    EXPECT_TRUE(r.kept_original) << "layer " << r.layer;
    EXPECT_EQ(r.error_after, r.error_before) << "layer " << r.layer;
  }
  for (std::size_t i = 0; i < overshot.linears.size(); ++i) EXPECT_EQ(overshot.linears[i].second.codes, gptq.linears[i].second.codes);

  // A packed model of another shape is refused.
  PackedContents wrong = gptq;
  wrong.config.n_layers += 1;
  EXPECT_EQ(RefineBlocks(*model, lines, options, wrong).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RefineBlocks(*model, {}, options, packed).code(), absl::StatusCode::kInvalidArgument);
  positions.back().pop_back();
  EXPECT_EQ(RefineBlocks(*model, lines, options, packed, positions).code(), absl::StatusCode::kInvalidArgument);
  positions.pop_back();
  EXPECT_EQ(RefineBlocks(*model, lines, options, packed, positions).code(), absl::StatusCode::kInvalidArgument);
  PackedContents missing = gptq;
  missing.linears.pop_back();
  EXPECT_EQ(RefineBlocks(*model, lines, options, missing).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.linears.front().second.codes, gptq.linears.front().second.codes);  // left as it was
}

// stories260K, quantized by GPTQ (groups of 32), and its first calibration lines.
struct QuantizedStories {
  std::unique_ptr<Model> model;
  std::vector<std::vector<int>> lines;
  PackedContents packed;
};

QuantizedStories QuantizeStories(int lines) {
  QuantizedStories q;
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(RequireModelFile("stories260K.bin").string());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(RequireModelFile("tok512.bin").string());
  if (!model.ok() || !tokenizer.ok()) return q;
  absl::StatusOr<std::vector<std::vector<int>>> encoded =
      EncodeLines(RequireSharedFile("data/tinystories-dev.txt").string(), **tokenizer, {0, lines});
  if (!encoded.ok()) return q;
  for (auto& s : *encoded) s.resize(std::min<std::size_t>(s.size(), (*model)->config.max_seq_len));
  absl::StatusOr<CalibrationStats> stats = Calibrate(**model, *encoded);
  if (!stats.ok()) return q;
  QuantizeOptions quantize;
  quantize.group_size = 32;
  absl::StatusOr<PackedContents> packed = QuantizeModel(**model, quantize, &*stats, nullptr);
  if (!packed.ok()) return q;
  q.model = *std::move(model);
  q.lines = *std::move(encoded);
  q.packed = *std::move(packed);
  return q;
}

TEST(BlockApTest, TrainsTheNormGainsWhenAsked) {
  QuantizedStories q = QuantizeStories(4);
  ASSERT_NE(q.model, nullptr);
  BlockApOptions options;
  options.epochs = 2;
  options.batch_sequences = 1;
  options.adam.weight_lr = 2e-3f;
  options.adam.scale_lr = 2e-3f;
  options.adam.norm_lr = 1e-2f;
  options.schedule = LrSchedule::kCosine;
  const PackedContents gptq = q.packed;
  std::vector<BlockApReport> reports;
  ASSERT_OK(RefineBlocks(*q.model, q.lines, options, q.packed, {}, [&](const BlockApReport& r) { reports.push_back(r); }));
  for (const BlockApReport& r : reports) {
    EXPECT_FALSE(r.kept_original) << "layer " << r.layer;
    EXPECT_LT(r.error_after, r.error_before) << "layer " << r.layer;
  }
  ASSERT_EQ(q.packed.norms.size(), gptq.norms.size());
  for (std::size_t i = 0; i + 1 < gptq.norms.size(); ++i) EXPECT_NE(q.packed.norms[i], gptq.norms[i]) << "norm " << i;
  EXPECT_EQ(q.packed.norms.back(), gptq.norms.back()) << "the final norm is no layer's";
}

// Two threads run a step's sequences side by side, one thread runs them one after the other
// (both on single-threaded products); each sequence's gradients are kept apart and summed in the
// step's order, so the trained layers come out the same bit for bit, norm gains included.
TEST(BlockApTest, SequencesSideBySideTrainWhatOneThreadTrains) {
  QuantizedStories q = QuantizeStories(6);
  ASSERT_NE(q.model, nullptr);
  BlockApOptions options;
  options.epochs = 2;
  options.batch_sequences = 2;
  options.adam.weight_lr = 2e-3f;
  options.adam.scale_lr = 2e-3f;
  options.adam.norm_lr = 1e-2f;
  std::vector<PackedContents> results;
  std::vector<std::vector<double>> errors;
  for (int threads : {1, 2}) {
    options.threads = threads;
    PackedContents packed = q.packed;
    std::vector<double> layer_errors;
    ASSERT_OK(RefineBlocks(*q.model, q.lines, options, packed, {},
                           [&](const BlockApReport& r) { layer_errors.push_back(r.error_after); }));
    results.push_back(std::move(packed));
    errors.push_back(std::move(layer_errors));
  }
  EXPECT_EQ(errors[0], errors[1]);
  ASSERT_EQ(results[0].linears.size(), results[1].linears.size());
  bool trained = false;
  for (std::size_t i = 0; i < results[0].linears.size(); ++i) {
    const W2Matrix& a = results[0].linears[i].second;
    const W2Matrix& b = results[1].linears[i].second;
    EXPECT_EQ(a.codes, b.codes) << "linear " << i;
    EXPECT_EQ(a.scales, b.scales) << "linear " << i;
    trained |= a.codes != q.packed.linears[i].second.codes;
  }
  EXPECT_TRUE(trained) << "training changed no code: the comparison shows nothing";
  EXPECT_EQ(results[0].norms, results[1].norms);
}

TEST(EndToEndTest, TrainedScalesLowerTheDivergenceFromTheFp32Model) {
  QuantizedStories q = QuantizeStories(4);
  ASSERT_NE(q.model, nullptr);
  const PackedContents gptq = q.packed;
  EndToEndOptions options;
  options.epochs = 3;
  options.batch_sequences = 1;
  options.scale_lr = 1e-3f;
  EndToEndReport report;
  ASSERT_OK(TrainScalesEndToEnd(*q.model, q.lines, options, q.packed, &report));
  EXPECT_FALSE(report.kept_original);
  EXPECT_GT(report.kl_before, 0.0);
  EXPECT_LT(report.kl_after, 0.9 * report.kl_before);
  ASSERT_EQ(report.epoch_kl.size(), 3u);
  int scales_changed = 0;
  for (std::size_t i = 0; i < q.packed.linears.size(); ++i) {
    const W2Matrix &a = q.packed.linears[i].second, &b = gptq.linears[i].second;
    EXPECT_EQ(a.codes, b.codes) << "linear " << i;
    EXPECT_EQ(a.zeros, b.zeros) << "linear " << i;
    scales_changed += a.scales != b.scales;
  }
  EXPECT_EQ(scales_changed, static_cast<int>(q.packed.linears.size()));

  // Steps far too large make it worse: the scales it was given stay.
  PackedContents overshot = gptq;
  options.epochs = 1;
  options.scale_lr = 1.0f;
  ASSERT_OK(TrainScalesEndToEnd(*q.model, q.lines, options, overshot, &report));
  EXPECT_TRUE(report.kept_original);
  for (std::size_t i = 0; i < overshot.linears.size(); ++i) EXPECT_EQ(overshot.linears[i].second.scales, gptq.linears[i].second.scales);

  // Bad input is refused and changes nothing.
  PackedContents wrong = gptq;
  wrong.config.vocab_size += 1;
  EXPECT_EQ(TrainScalesEndToEnd(*q.model, q.lines, options, wrong).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainScalesEndToEnd(*q.model, {}, options, wrong).code(), absl::StatusCode::kInvalidArgument);
  PackedContents missing = gptq;
  missing.linears.pop_back();
  EXPECT_EQ(TrainScalesEndToEnd(*q.model, q.lines, options, missing).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.linears.front().second.scales, gptq.linears.front().second.scales);
  std::vector<std::vector<int>> out_of_range = {{1, 5, q.model->config.vocab_size}};
  EXPECT_EQ(TrainScalesEndToEnd(*q.model, out_of_range, options, q.packed).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace accllm
