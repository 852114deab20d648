#include "runtime/model/synthesize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/common/half.h"

namespace accllm {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

void SyntheticWeights::Fill(const TensorId& id, std::span<float> out) const {
  uint64_t state = seed_ ^ (uint64_t(static_cast<int>(id.kind)) << 48) ^ (uint64_t(id.layer + 1) << 32);
  SplitMix64(state);
  const bool is_norm = GroupOf(id.kind) == TensorGroup::kNorm;
  const float center = is_norm ? 1.0f : 0.0f;
  const float half_width = is_norm ? 0.1f : 0.02f * std::sqrt(3.0f);
  for (float& v : out) {
    const float unit = static_cast<float>(SplitMix64(state) >> 40) * 0x1p-24f;  // [0, 1)
    v = center + (2.0f * unit - 1.0f) * half_width;
  }
}

}  // namespace accllm

namespace accllm {

PackedContents SynthesizePacked(const LlamaConfig& config, uint64_t seed, int group_size, bool sparse24) {
  PackedContents p;
  p.config = config;
  uint64_t state = seed;
  const auto fp16_table = [&](int64_t n) {
    std::vector<uint16_t> t(static_cast<std::size_t>(n));
    for (auto& v : t) v = FloatToFp16((static_cast<float>(SplitMix64(state) >> 40) * 0x1p-24f - 0.5f) * 0.04f);
    return t;
  };
  p.embedding = fp16_table(int64_t{config.vocab_size} * config.dim);
  if (!config.shared_classifier) p.classifier = fp16_table(int64_t{config.vocab_size} * config.dim);
  for (int i = 0; i < 2 * config.n_layers + 1; ++i) p.norms.emplace_back(config.dim, 1.0f);
  for (const TensorId& id : AllTensors(config)) {
    if (!IsLinear(id.kind)) continue;
    const std::vector<int64_t> dims = TensorShape(config, id.kind);
    W2Matrix m({static_cast<int>(dims[0]), static_cast<int>(dims[1]), group_size, sparse24});
    const auto fill = [&](std::vector<uint8_t>& bytes) {
      for (std::size_t i = 0; i < bytes.size(); i += 8) {
        const uint64_t r = SplitMix64(state);
        std::memcpy(bytes.data() + i, &r, std::min<std::size_t>(8, bytes.size() - i));
      }
    };
    fill(m.codes);
    if (sparse24) fill(m.sparse_index);  // any positions: speed does not depend on them
    for (auto& s : m.scales) s = FloatToFp16(0.0025f + static_cast<float>(SplitMix64(state) >> 40) * 0x1p-24f * 0.005f);
    for (auto& z : m.zeros) z = static_cast<uint8_t>(2 + SplitMix64(state) % 3);
    p.linears.emplace_back(id, std::move(m));
  }
  p.metadata["source_model"] = "synthesized";
  return p;
}

}  // namespace accllm
