// Layer-by-layer quantization against the whole-model pipeline it replaces for large models
// (Calibrate + RotateResidualStream + QuantizeModel), and the Hugging Face weight source it reads
// large checkpoints through against the loader.
#include "runtime/quant/layer_by_layer.h"

#include <cstring>

#include "gmock/gmock.h"
#include "runtime/eval/corpus.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/calibration.h"
#include "runtime/quant/rotation.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;

TEST(HfWeightSourceTest, EveryTensorAsTheLoaderConvertsIt) {
  const std::string dir = RequireModelFile("gutenberg30M").string();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> model, LoadModel(dir));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<WeightSource> source, OpenHfWeightSource(dir));
  const LlamaConfig& c = source->config();
  EXPECT_EQ(c.dim, model->config.dim);
  EXPECT_EQ(c.n_layers, model->config.n_layers);
  std::vector<TensorId> ids = AllTensors(c);
  ids.push_back({TensorKind::kClassifier, -1});  // tied: the embedding
  for (const TensorId& id : ids) {
    std::vector<float> got(static_cast<std::size_t>(TensorElements(c, id.kind)));
    source->Fill(id, got);
    const float* expected = id.kind == TensorKind::kClassifier ? model->weights.classifier : model->Tensor(id);
    ASSERT_EQ(std::memcmp(got.data(), expected, got.size() * sizeof(float)), 0) << HfTensorName(id);
  }
  EXPECT_FALSE(OpenHfWeightSource(RequireModelFile("stories260K.bin").string()).ok());
}

class LayerByLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(model_, LoadModel(RequireModelFile("stories260K.bin").string()));
    ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
    ASSERT_OK_AND_ASSIGN(lines_, EncodeLines(RequireSharedFile("data/tinystories-dev.txt").string(), *tokenizer, {0, 3}));
    for (auto& s : lines_) {
      if (static_cast<int>(s.size()) > model_->config.max_seq_len) s.resize(model_->config.max_seq_len);
    }
    options_.group_size = 32;
  }

  // The whole-model pipeline, as the quantize command runs it.
  PackedContents Whole(bool rotate, bool sequential) {
    std::unique_ptr<Model> rotated;
    const Model* model = model_.get();
    if (rotate) {
      auto r = RotateResidualStream(*model_, 7);
      EXPECT_TRUE(r.ok()) << r.status();
      rotated = std::move(*r);
      model = rotated.get();
    }
    QuantizeOptions options = options_;
    if (sequential) {
      options.recalibrate = [&](const Model& prefix) { return Calibrate(prefix, lines_); };
    }
    auto stats = Calibrate(*model, lines_);
    EXPECT_TRUE(stats.ok()) << stats.status();
    auto packed = QuantizeModel(*model, options, &*stats, nullptr);
    EXPECT_TRUE(packed.ok()) << packed.status();
    return std::move(*packed);
  }

  absl::StatusOr<PackedContents> Layered(bool rotate, bool sequential, const std::vector<std::vector<int>>& lines) {
    LayerByLayerOptions options;
    options.quantize = options_;
    options.rotate = rotate;
    options.rotation_seed = 7;
    options.sequential = sequential;
    return QuantizeLayerByLayer(ModelWeightSource(*model_), lines, options);
  }

  // Everything but the linears bit for bit; the linears' codes, scales and zeros nearly all equal
  // (calibration sums its products in another order, which moves a few roundings).
  static void ExpectSame(const PackedContents& a, const PackedContents& b, double min_equal, float norm_tolerance = 0) {
    EXPECT_EQ(a.config.shared_classifier, b.config.shared_classifier);
    EXPECT_EQ(a.config.ffn_hadamard_block, b.config.ffn_hadamard_block);
    EXPECT_EQ(a.embedding, b.embedding);
    EXPECT_EQ(a.classifier, b.classifier);
    ASSERT_EQ(a.norms.size(), b.norms.size());
    for (std::size_t i = 0; i < a.norms.size(); ++i) {
      if (norm_tolerance == 0) {
        EXPECT_EQ(a.norms[i], b.norms[i]) << "norm " << i;
        continue;
      }
      ASSERT_EQ(a.norms[i].size(), b.norms[i].size());
      for (std::size_t j = 0; j < a.norms[i].size(); ++j) EXPECT_NEAR(a.norms[i][j], b.norms[i][j], norm_tolerance) << i;
    }
    EXPECT_EQ(a.metadata, b.metadata);
    ASSERT_EQ(a.linears.size(), b.linears.size());
    for (std::size_t i = 0; i < a.linears.size(); ++i) {
      const W2Matrix& x = a.linears[i].second;
      const W2Matrix& y = b.linears[i].second;
      EXPECT_EQ(a.linears[i].first.kind, b.linears[i].first.kind);
      EXPECT_EQ(a.linears[i].first.layer, b.linears[i].first.layer);
      ASSERT_EQ(x.codes.size(), y.codes.size());
      const auto equal = [](const auto& u, const auto& v) {
        std::size_t n = 0;
        for (std::size_t k = 0; k < u.size(); ++k) n += u[k] == v[k];
        return static_cast<double>(n) / static_cast<double>(u.size());
      };
      EXPECT_GE(equal(x.codes, y.codes), min_equal) << HfTensorName(a.linears[i].first);
      EXPECT_GE(equal(x.scales, y.scales), min_equal) << HfTensorName(a.linears[i].first);
      EXPECT_GE(equal(x.zeros, y.zeros), min_equal) << HfTensorName(a.linears[i].first);
    }
  }

  std::unique_ptr<Model> model_;
  std::vector<std::vector<int>> lines_;
  QuantizeOptions options_;
};

TEST_F(LayerByLayerTest, EqualsTheWholeModelPipeline) {
  for (bool rotate : {false, true}) {
    SCOPED_TRACE(rotate ? "rotated" : "as it is");
    ASSERT_OK_AND_ASSIGN(PackedContents layered, Layered(rotate, false, lines_));
    ExpectSame(Whole(rotate, false), layered, 0.99);
  }
}

TEST_F(LayerByLayerTest, SequentialEqualsTheWholeModelsRecalibration) {
  ASSERT_OK_AND_ASSIGN(PackedContents layered, Layered(true, true, lines_));
  ExpectSame(Whole(true, true), layered, 0.98);
  // And it is another quantization than the fp32 model's statistics give.
  ASSERT_OK_AND_ASSIGN(PackedContents plain, Layered(true, false, lines_));
  EXPECT_NE(layered.linears.back().second.codes, plain.linears.back().second.codes);
}

// Block-AP after each layer's GPTQ gives what RefineBlocks gives after the whole model's GPTQ.
TEST_F(LayerByLayerTest, BlockReconstructionEqualsRefineBlocks) {
  BlockApOptions block_ap;
  block_ap.epochs = 2;
  block_ap.adam.norm_lr = 1e-3f;  // the gains, trained, go into the norms
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> rotated, RotateResidualStream(*model_, 7));
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*rotated, lines_));
  std::vector<std::vector<float>> positions;
  ASSERT_OK_AND_ASSIGN(PackedContents whole, QuantizeModel(*rotated, options_, &stats, nullptr, &positions));
  const PackedContents gptq_only = whole;
  ASSERT_OK(RefineBlocks(*rotated, lines_, block_ap, whole, positions));

  LayerByLayerOptions options;
  options.quantize = options_;
  options.rotate = true;
  options.rotation_seed = 7;
  options.block_ap = true;
  options.block_ap_options = block_ap;
  int refined = 0;
  LayerByLayerProgress progress;
  progress.on_refined = [&](const BlockApReport& r) { EXPECT_EQ(r.layer, refined++); };
  ASSERT_OK_AND_ASSIGN(PackedContents layered, QuantizeLayerByLayer(ModelWeightSource(*model_), lines_, options, progress));
  EXPECT_EQ(refined, model_->config.n_layers);
  ExpectSame(whole, layered, 0.97, 1e-4f);  // trained gains: the same up to float order
  EXPECT_NE(layered.norms, gptq_only.norms);  // the gains moved
  options.sequential = true;
  EXPECT_THAT(QuantizeLayerByLayer(ModelWeightSource(*model_), lines_, options).status().message(),
              ::testing::HasSubstr("not sequential"));
}

TEST_F(LayerByLayerTest, RoundToNearestNeedsNoCalibration) {
  options_.method = QuantMethod::kRtn;
  ASSERT_OK_AND_ASSIGN(PackedContents layered, Layered(false, false, {}));
  ASSERT_OK_AND_ASSIGN(PackedContents whole, QuantizeModel(*model_, options_, nullptr, nullptr));
  ExpectSame(whole, layered, 1.0);
}

TEST_F(LayerByLayerTest, RefusesBadInput) {
  EXPECT_THAT(Layered(false, false, {}).status().message(), ::testing::HasSubstr("need calibration data"));
  EXPECT_THAT(Layered(false, false, {{1, 5, 100000}}).status().message(), ::testing::HasSubstr("token id 100000 out of range"));
  EXPECT_THAT(Layered(false, false, {{}}).status().message(), ::testing::HasSubstr("a calibration sequence of 0 tokens"));
  std::vector<int> too_long(static_cast<std::size_t>(model_->config.max_seq_len) + 1, 1);
  EXPECT_THAT(Layered(false, false, {too_long}).status().message(), ::testing::HasSubstr("tokens (1 to"));
  LayerByLayerOptions options;
  options.quantize = options_;
  options.ffn_block = 16;  // without the rotation
  EXPECT_THAT(QuantizeLayerByLayer(ModelWeightSource(*model_), lines_, options).status().message(),
              ::testing::HasSubstr("needs --rotate"));
}

}  // namespace
}  // namespace accllm
