#include "runtime/model/model.h"

#include <algorithm>

#include "runtime/common/aligned_buffer.h"

namespace accllm {

const char* ModelFormatName(ModelFormat format) {
  switch (format) {
    case ModelFormat::kLlama2cLegacy: return "llama2.c legacy";
    case ModelFormat::kLlama2cV1: return "llama2.c v1 (ak42, fp32)";
    case ModelFormat::kHfSafetensors: return "Hugging Face safetensors";
  }
  return "?";
}

const float* Model::Tensor(const TensorId& id) const {
  const LlamaWeights& w = weights;
  const auto layer = [&]() -> const LayerWeights& { return w.layers[static_cast<std::size_t>(id.layer)]; };
  switch (id.kind) {
    case TensorKind::kTokenEmbedding: return w.token_embedding;
    case TensorKind::kAttnNorm: return layer().rms_att;
    case TensorKind::kWq: return layer().wq;
    case TensorKind::kWk: return layer().wk;
    case TensorKind::kWv: return layer().wv;
    case TensorKind::kWo: return layer().wo;
    case TensorKind::kFfnNorm: return layer().rms_ffn;
    case TensorKind::kW1: return layer().w1;
    case TensorKind::kW2: return layer().w2;
    case TensorKind::kW3: return layer().w3;
    case TensorKind::kFinalNorm: return w.rms_final;
    case TensorKind::kClassifier: return w.classifier;
  }
  return nullptr;
}

void Model::SetTensor(const TensorId& id, const float* data) {
  LlamaWeights& w = weights;
  if (IsPerLayer(id.kind) && w.layers.size() <= static_cast<std::size_t>(id.layer)) {
    w.layers.resize(static_cast<std::size_t>(id.layer) + 1);
  }
  const auto layer = [&]() -> LayerWeights& { return w.layers[static_cast<std::size_t>(id.layer)]; };
  switch (id.kind) {
    case TensorKind::kTokenEmbedding: w.token_embedding = data; break;
    case TensorKind::kAttnNorm: layer().rms_att = data; break;
    case TensorKind::kWq: layer().wq = data; break;
    case TensorKind::kWk: layer().wk = data; break;
    case TensorKind::kWv: layer().wv = data; break;
    case TensorKind::kWo: layer().wo = data; break;
    case TensorKind::kFfnNorm: layer().rms_ffn = data; break;
    case TensorKind::kW1: layer().w1 = data; break;
    case TensorKind::kW2: layer().w2 = data; break;
    case TensorKind::kW3: layer().w3 = data; break;
    case TensorKind::kFinalNorm: w.rms_final = data; break;
    case TensorKind::kClassifier: w.classifier = data; break;
  }
}

float* Model::AllocateOwned(int64_t elements) {
  auto buffer = std::make_shared<AlignedBuffer>(static_cast<std::size_t>(elements) * sizeof(float));
  if (buffer->size() != static_cast<std::size_t>(elements) * sizeof(float)) return nullptr;
  float* data = buffer->as<float>();
  storage.push_back(std::move(buffer));
  return data;
}

void ModelWeightSource::Fill(const TensorId& id, std::span<float> out) const {
  const TensorKind kind = (id.kind == TensorKind::kClassifier && model_.config.shared_classifier)
                              ? TensorKind::kTokenEmbedding
                              : id.kind;
  const float* src = model_.Tensor({kind, id.layer});
  std::copy_n(src, out.size(), out.begin());
}

}  // namespace accllm
