#include "runtime/model/hf_checkpoint.h"

#include "gmock/gmock.h"
#include "runtime/common/half.h"
#include "runtime/model/load_model.h"
#include "runtime/model/synthesize.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ScratchDir;

// Non-default eps and theta, to see them survive config.json.
LlamaConfig SmallConfig() {
  LlamaConfig c = ::accllm::testing::TinyConfig(/*shared_classifier=*/false);
  c.norm_eps = 1e-6f;
  c.rope_theta = 500000.0f;
  return c;
}

float RoundTrip(DType dtype, float v) {
  if (dtype == DType::kF16) return Fp16ToFloat(FloatToFp16(v));
  if (dtype == DType::kBF16) return Bf16ToFloat(FloatToBf16(v));
  return v;
}

class HfCheckpointTest : public ::testing::TestWithParam<DType> {};

// Writing permutes q/k rows into Hugging Face order and narrows to the dtype; loading must undo
// the permutation exactly and widen exactly.
TEST_P(HfCheckpointTest, WriteThenLoadRoundTrips) {
  const DType dtype = GetParam();
  const SyntheticWeights source(SmallConfig(), /*seed=*/3);
  ScratchDir dir;
  ASSERT_OK(WriteHfCheckpoint(source, dir.path().string(), {.dtype = dtype, .max_shard_bytes = 0}));
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(dir.path().string()));
  const LlamaConfig& c = model->config;
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FALSE(c.shared_classifier);
  for (const TensorId& id : AllTensors(c)) {
    std::vector<float> expected(static_cast<std::size_t>(TensorElements(c, id.kind)));
    source.Fill(id, expected);
    for (float& v : expected) v = RoundTrip(dtype, v);
    const float* got = model->Tensor(id);
    EXPECT_EQ(std::vector<float>(got, got + expected.size()), expected) << HfTensorName(id);
  }
  for (const TensorRecord& t : model->tensors) EXPECT_EQ(t.file_dtype, DTypeName(dtype));
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, HfCheckpointTest, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(HfCheckpointLoadTest, TiedEmbeddingsNeedNoLmHead) {
  LlamaConfig c = SmallConfig();
  c.shared_classifier = true;
  const SyntheticWeights source(c, 1);
  ScratchDir dir;
  ASSERT_OK(WriteHfCheckpoint(source, dir.path().string(), {}));
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(dir.path().string()));
  EXPECT_TRUE(model->config.shared_classifier);
  EXPECT_EQ(model->weights.classifier, model->weights.token_embedding);
}

}  // namespace
}  // namespace accllm

namespace accllm {
namespace {

TEST(HfCheckpointLoadTest, MetadataOnlySkipsConversion) {
  const SyntheticWeights source(SmallConfig(), 1);
  ScratchDir dir;
  ASSERT_OK(WriteHfCheckpoint(source, dir.path().string(), {.dtype = DType::kBF16}));
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(dir.path().string(), {.metadata_only = true}));
  EXPECT_EQ(model->config.dim, 16);
  EXPECT_EQ(model->tensors.size(), AllTensors(model->config).size());
  EXPECT_EQ(model->weights.token_embedding, nullptr);
  EXPECT_TRUE(model->storage.size() == 1u) << "only the mapped shard, no converted copies";
}

}  // namespace
}  // namespace accllm
