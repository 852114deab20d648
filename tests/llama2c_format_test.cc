#include "runtime/model/llama2c_format.h"

#include "gmock/gmock.h"
#include "runtime/model/load_model.h"
#include "runtime/model/synthesize.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ScratchDir;
using ::accllm::testing::TinyConfig;


// Every tensor the loader points at equals what the source produced.
void ExpectSameWeights(const WeightSource& source, const Model& model) {
  const LlamaConfig& c = source.config();
  for (const TensorId& id : AllTensors(c)) {
    std::vector<float> expected(static_cast<std::size_t>(TensorElements(c, id.kind)));
    source.Fill(id, expected);
    const float* got = model.Tensor(id);
    ASSERT_NE(got, nullptr) << HfTensorName(id);
    EXPECT_EQ(std::vector<float>(got, got + expected.size()), expected) << HfTensorName(id);
  }
}

class Llama2cFormatTest : public ::testing::TestWithParam<std::tuple<Llama2cVersion, bool>> {};

TEST_P(Llama2cFormatTest, WriteThenLoadRoundTrips) {
  const auto [version, shared] = GetParam();
  const SyntheticWeights source(TinyConfig(shared), /*seed=*/7);
  ScratchDir dir;
  const std::string path = (dir / "m.bin").string();
  ASSERT_OK(WriteLlama2cModel(source, path, version));
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(path));
  EXPECT_EQ(model->format, version == Llama2cVersion::kV1 ? ModelFormat::kLlama2cV1 : ModelFormat::kLlama2cLegacy);
  EXPECT_EQ(model->config.dim, 16);
  EXPECT_EQ(model->config.n_kv_heads, 2);
  EXPECT_EQ(model->config.shared_classifier, shared);
  ExpectSameWeights(source, *model);
  if (shared) {
    EXPECT_EQ(model->weights.classifier, model->weights.token_embedding);
  } else {
    EXPECT_NE(model->weights.classifier, model->weights.token_embedding);
  }
}

INSTANTIATE_TEST_SUITE_P(AllVariants, Llama2cFormatTest,
                         ::testing::Combine(::testing::Values(Llama2cVersion::kLegacy, Llama2cVersion::kV1),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == Llama2cVersion::kV1 ? "V1" : "Legacy") +
                                  (std::get<1>(info.param) ? "SharedClassifier" : "SeparateClassifier");
                         });

}  // namespace
}  // namespace accllm
