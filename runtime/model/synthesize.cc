#include "runtime/model/synthesize.h"

#include <cmath>

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
