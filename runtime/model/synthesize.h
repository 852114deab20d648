// Deterministic random weights of any LLaMA shape, for benchmarks at real scale (speed does not
// depend on the values). Tensors are generated on demand, so a 7B model never sits in memory.
#pragma once

#include <cstdint>

#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"

namespace accllm {

class SyntheticWeights final : public WeightSource {
 public:
  SyntheticWeights(const LlamaConfig& config, uint64_t seed) : config_(config), seed_(seed) {}
  const LlamaConfig& config() const override { return config_; }
  // Norm weights are 1 + U(-0.1, 0.1); everything else U(-a, a) with standard deviation 0.02,
  // the usual LLaMA initialisation scale. Each tensor has its own stream, derived from the seed
  // and the tensor's identity, so tensors can be produced in any order.
  void Fill(const TensorId& id, std::span<float> out) const override;

 private:
  LlamaConfig config_;
  uint64_t seed_;
};

}  // namespace accllm

namespace accllm {

// A packed model of any shape with random W2 codes, scales and zeros (2:4 if `sparse24`),
// generated directly in memory: for speed measurements at real scale, where the values do not
// matter and quantizing 7B random fp32 weights would only cost time.
PackedContents SynthesizePacked(const LlamaConfig& config, uint64_t seed, int group_size, bool sparse24);

}  // namespace accllm
