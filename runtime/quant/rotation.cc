#include "runtime/quant/rotation.h"

#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/common/hadamard.h"

namespace accllm {

int FfnHadamardBlock(const LlamaConfig& config) {
  int block = 1;
  while (block < 1024 && config.hidden_dim % (2 * block) == 0) block *= 2;
  return block;
}

ResidualRotation::ResidualRotation(int dim, uint64_t seed) : signs_(dim) {
  std::mt19937_64 rng(seed);
  for (float& s : signs_) s = (rng() & 1) ? -1.0f : 1.0f;
}

void ResidualRotation::Rotate(float* v) const {
  const int dim = static_cast<int>(signs_.size());
  for (int i = 0; i < dim; ++i) v[i] *= signs_[i];
  Hadamard(v, dim);
}

void ResidualRotation::Reader(const float* w, const float* gain, int rows, float* out) const {
  const int64_t dim = static_cast<int64_t>(signs_.size());
  for (int r = 0; r < rows; ++r) {
    float* row = out + r * dim;
    for (int64_t j = 0; j < dim; ++j) row[j] = w[r * dim + j] * gain[j];
    Rotate(row);
  }
}

void ResidualRotation::Writer(const float* w, int cols, float* out) const {
  const int dim = static_cast<int>(signs_.size());
  std::vector<float> column(dim);
  for (int j = 0; j < cols; ++j) {
    for (int r = 0; r < dim; ++r) column[r] = w[static_cast<int64_t>(r) * cols + j];
    Rotate(column.data());
    for (int r = 0; r < dim; ++r) out[static_cast<int64_t>(r) * cols + j] = column[r];
  }
}

absl::StatusOr<std::unique_ptr<Model>> RotateResidualStream(const Model& model, uint64_t seed, int ffn_block) {
  const LlamaConfig& c = model.config;
  if (model.config.ffn_hadamard_block != 0) return absl::InvalidArgumentError("the model is rotated already (its down projection reads Hadamard-transformed input)");
  if (ffn_block != 0 && (!IsPowerOfTwo(ffn_block) || c.hidden_dim % ffn_block != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("a Hadamard block of ", ffn_block, " does not divide hidden_dim ", c.hidden_dim));
  }
  if (!IsPowerOfTwo(c.dim)) {
    return absl::InvalidArgumentError(absl::StrCat("rotating the residual stream needs a power-of-two width, not ", c.dim));
  }
  const int dim = c.dim;
  const ResidualRotation rotation(dim, seed);

  auto out = std::make_unique<Model>();
  out->format = model.format;
  out->path = model.path;
  out->config = c;
  out->config.shared_classifier = false;
  out->config.ffn_hadamard_block = ffn_block;
  out->weights.layers.resize(c.n_layers);
  const auto owned = [&](TensorKind kind) { return out->AllocateOwned(TensorElements(c, kind)); };
  const auto ones = [&](TensorKind kind) {
    float* p = owned(kind);
    if (p != nullptr) std::fill(p, p + dim, 1.0f);
    return p;
  };
  const auto reader = [&](const float* w, const float* gain, int rows, TensorKind kind) {
    float* p = owned(kind);
    if (p != nullptr) rotation.Reader(w, gain, rows, p);
    return p;
  };
  const auto writer = [&](const float* w, int cols, TensorKind kind) {
    float* p = owned(kind);
    if (p != nullptr) rotation.Writer(w, cols, p);
    return p;
  };

  float* embedding = owned(TensorKind::kTokenEmbedding);
  if (embedding == nullptr) return absl::ResourceExhaustedError("out of memory rotating the model");
  for (int v = 0; v < c.vocab_size; ++v) {
    float* row = embedding + static_cast<int64_t>(v) * dim;
    std::copy_n(model.weights.token_embedding + static_cast<int64_t>(v) * dim, dim, row);
    rotation.Rotate(row);
  }
  out->weights.token_embedding = embedding;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& in = model.weights.layers[l];
    LayerWeights& w = out->weights.layers[l];
    w.rms_att = ones(TensorKind::kAttnNorm);
    w.wq = reader(in.wq, in.rms_att, c.dim, TensorKind::kWq);
    w.wk = reader(in.wk, in.rms_att, c.kv_dim(), TensorKind::kWk);
    w.wv = reader(in.wv, in.rms_att, c.kv_dim(), TensorKind::kWv);
    w.wo = writer(in.wo, c.dim, TensorKind::kWo);
    w.rms_ffn = ones(TensorKind::kFfnNorm);
    w.w1 = reader(in.w1, in.rms_ffn, c.hidden_dim, TensorKind::kW1);
    w.w3 = reader(in.w3, in.rms_ffn, c.hidden_dim, TensorKind::kW3);
    float* down = writer(in.w2, c.hidden_dim, TensorKind::kW2);
    if (ffn_block > 0 && down != nullptr) {  // W2 H: each row's blocks transformed (H is symmetric)
      for (int r = 0; r < dim; ++r) BlockHadamard(down + static_cast<int64_t>(r) * c.hidden_dim, c.hidden_dim, ffn_block);
    }
    w.w2 = down;
    for (const float* p : {w.rms_att, w.wq, w.wk, w.wv, w.wo, w.rms_ffn, w.w1, w.w3, w.w2}) {
      if (p == nullptr) return absl::ResourceExhaustedError("out of memory rotating the model");
    }
  }
  out->weights.rms_final = ones(TensorKind::kFinalNorm);
  out->weights.classifier = reader(model.weights.classifier, model.weights.rms_final, c.vocab_size, TensorKind::kClassifier);
  if (out->weights.rms_final == nullptr || out->weights.classifier == nullptr) {
    return absl::ResourceExhaustedError("out of memory rotating the model");
  }
  return out;
}

}  // namespace accllm
