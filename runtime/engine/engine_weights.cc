#include "runtime/engine/engine_weights.h"

namespace accllm {

LinearWeights& LinearOf(EngineLayer& layer, TensorKind kind) {
  switch (kind) {
    case TensorKind::kWq: return layer.wq;
    case TensorKind::kWk: return layer.wk;
    case TensorKind::kWv: return layer.wv;
    case TensorKind::kWo: return layer.wo;
    case TensorKind::kW1: return layer.w1;
    case TensorKind::kW2: return layer.w2;
    default: return layer.w3;
  }
}

EngineWeights EngineWeightsFromModel(const Model& model) {
  const LlamaConfig& c = model.config;
  const auto linear = [&](const float* w, TensorKind kind) {
    const std::vector<int64_t> shape = TensorShape(c, kind);
    LinearWeights l;
    l.out = static_cast<int>(shape[0]);
    l.in = static_cast<int>(shape[1]);
    l.f32 = w;
    return l;
  };
  EngineWeights e;
  e.config = c;
  e.embedding_f32 = model.weights.token_embedding;
  for (const LayerWeights& lw : model.weights.layers) {
    e.layers.push_back({lw.rms_att, linear(lw.wq, TensorKind::kWq), linear(lw.wk, TensorKind::kWk),
                        linear(lw.wv, TensorKind::kWv), linear(lw.wo, TensorKind::kWo), lw.rms_ffn,
                        linear(lw.w1, TensorKind::kW1), linear(lw.w2, TensorKind::kW2), linear(lw.w3, TensorKind::kW3)});
  }
  e.rms_final = model.weights.rms_final;
  e.classifier = linear(model.weights.classifier, TensorKind::kClassifier);
  return e;
}

}  // namespace accllm
