#include "runtime/model/synthesize.h"

#include <cmath>

#include "gmock/gmock.h"
#include "runtime/model/llama2c_format.h"
#include "runtime/model/load_model.h"
#include "runtime/reference/forward.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ScratchDir;

TEST(ShapeTest, PresetsHaveThePublishedParameterCounts) {
  const std::vector<std::pair<std::string, int64_t>> presets = {
      {"llama2-7b", 6738415616}, {"llama2-13b", 13015864320}, {"tinyllama-1.1b", 1100048384}};
  for (const auto& [name, params] : presets) {
    ASSERT_OK_AND_ASSIGN(LlamaConfig c, ParseShape(name));
    EXPECT_EQ(ParameterCount(c), params) << name;
  }
}

TEST(ShapeTest, CustomShapes) {
  ASSERT_OK_AND_ASSIGN(LlamaConfig c, ParseShape("dim=64,ffn=172,layers=5,heads=8,kv_heads=4,vocab=512,seq=512"));
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_kv_heads, 4);
  ASSERT_OK_AND_ASSIGN(LlamaConfig d, ParseShape("dim=32,ffn=64,layers=1,heads=4"));
  EXPECT_EQ(d.n_kv_heads, 4);
  EXPECT_EQ(d.vocab_size, 32000);
  for (const char* bad : {"llama3", "dim=64", "dim=64,ffn=1,layers=1,heads=5", "dim=x,ffn=1,layers=1,heads=1",
                          "dim=64,ffn=64,layers=1,heads=4,colour=red", "dim=-64,ffn=64,layers=1,heads=4"}) {
    EXPECT_FALSE(ParseShape(bad).ok()) << bad;
  }
}

TEST(SynthesizeTest, DeterministicPerSeedAndTensor) {
  ASSERT_OK_AND_ASSIGN(LlamaConfig c, ParseShape("dim=32,ffn=64,layers=2,heads=4,vocab=64,seq=16"));
  const SyntheticWeights a(c, 1), b(c, 1), other(c, 2);
  std::vector<float> x(32 * 32), y(32 * 32), z(32 * 32), w(32 * 32);
  a.Fill({TensorKind::kWq, 1}, x);
  b.Fill({TensorKind::kWq, 1}, y);
  other.Fill({TensorKind::kWq, 1}, z);
  a.Fill({TensorKind::kWq, 0}, w);
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  EXPECT_NE(x, w);
  double sum_sq = 0;
  for (float v : x) sum_sq += v * v;
  EXPECT_NEAR(std::sqrt(sum_sq / x.size()), 0.02, 0.004);
  std::vector<float> norm(32);
  a.Fill({TensorKind::kAttnNorm, 0}, norm);
  for (float v : norm) EXPECT_NEAR(v, 1.0f, 0.1f);
}

TEST(SynthesizeTest, WrittenModelLoadsAndGeneratesFiniteLogits) {
  ASSERT_OK_AND_ASSIGN(LlamaConfig c, ParseShape("dim=64,ffn=128,layers=2,heads=4,kv_heads=2,vocab=256,seq=32"));
  ScratchDir dir;
  ASSERT_OK(WriteLlama2cModel(SyntheticWeights(c, 9), (dir / "synth.bin").string(), Llama2cVersion::kV1));
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel((dir / "synth.bin").string()));
  EXPECT_EQ(ParameterCount(model->config), ParameterCount(c));
  EXPECT_FALSE(model->config.shared_classifier);
  RunState state(model->config, 4);
  for (int pos = 0; pos < 4; ++pos) {
    const std::span<const float> logits = Forward(*model, state, 7 * pos + 1, pos);
    for (float l : logits) ASSERT_TRUE(std::isfinite(l)) << "position " << pos;
  }
}

}  // namespace
}  // namespace accllm
