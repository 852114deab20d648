// The weights an engine runs on, whatever their precision: fp32 (a loaded checkpoint), fp16
// (packed embedding and classifier) or W2 (packed linear layers).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "runtime/model/model.h"
#include "runtime/quant/w2.h"
#include "runtime/quant/w8.h"

namespace accllm {

struct LinearWeights {
  int out = 0, in = 0;
  const float* f32 = nullptr;     // (out, in), or
  const uint16_t* f16 = nullptr;  // (out, in), or
  std::optional<W2View> w2;
  std::optional<W8View> w8;       // when set, used instead of f16 (an engine's 8-bit classifier)
};

struct EngineLayer {
  const float* rms_att;  // (dim)
  LinearWeights wq, wk, wv, wo;
  const float* rms_ffn;  // (dim)
  LinearWeights w1, w2, w3;
};

// The slot of linear layer `kind` (one of the seven IsLinear kinds) in `layer`.
LinearWeights& LinearOf(EngineLayer& layer, TensorKind kind);

struct EngineWeights {
  LlamaConfig config;
  const float* embedding_f32 = nullptr;      // (vocab, dim), or
  const uint16_t* embedding_f16 = nullptr;   // (vocab, dim)
  std::vector<EngineLayer> layers;
  const float* rms_final = nullptr;          // (dim)
  LinearWeights classifier;
  std::vector<std::shared_ptr<const void>> storage;  // keeps what the pointers point into alive
};

// An fp32 view of a loaded model (which must outlive the result).
EngineWeights EngineWeightsFromModel(const Model& model);

}  // namespace accllm
