// A loaded LLaMA model: its configuration, fp32 weight pointers for the reference forward pass,
// and the storage those pointers live in (memory-mapped files, plus converted copies).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/io/mapped_file.h"
#include "runtime/model/llama_config.h"

namespace accllm {

struct LayerWeights {
  const float* rms_att;  // (dim)
  const float* wq;       // (n_heads * head_size, dim)
  const float* wk;       // (kv_dim, dim)
  const float* wv;       // (kv_dim, dim)
  const float* wo;       // (dim, n_heads * head_size)
  const float* rms_ffn;  // (dim)
  const float* w1;       // (hidden_dim, dim)  gate
  const float* w2;       // (dim, hidden_dim)  down
  const float* w3;       // (hidden_dim, dim)  up
};

struct LlamaWeights {
  const float* token_embedding = nullptr;  // (vocab_size, dim)
  std::vector<LayerWeights> layers;        // n_layers
  const float* rms_final = nullptr;        // (dim)
  const float* classifier = nullptr;       // (vocab_size, dim); == token_embedding when shared
};

enum class ModelFormat { kLlama2cLegacy, kLlama2cV1, kHfSafetensors };

struct LoadOptions {
  LoadMode mode = LoadMode::kMap;
  // Read the configuration and tensor records only (for `accllm inspect`): tensors that would
  // need converting are not converted and their weight pointers stay null.
  bool metadata_only = false;
};
const char* ModelFormatName(ModelFormat format);

// Where one tensor came from, for `accllm inspect`.
struct TensorRecord {
  TensorId id;
  std::string file_dtype;  // "F32", "F16", "BF16"
  int64_t file_bytes = 0;
};

struct Model {
  ModelFormat format = ModelFormat::kLlama2cLegacy;
  std::string path;  // the file or directory it was loaded from
  LoadOptions load_options;
  LlamaConfig config;
  LlamaWeights weights;
  std::vector<TensorRecord> tensors;
  int64_t file_bytes = 0;  // total size of the files read

  // Owners of the memory `weights` points into (mapped files, converted tensors).
  std::vector<std::shared_ptr<const void>> storage;

  const float* Tensor(const TensorId& id) const;
  void SetTensor(const TensorId& id, const float* data);
  // Allocates zeroed fp32 storage owned by the model. note: returns nullptr if out of memory.
  float* AllocateOwned(int64_t elements);
};

// A source of canonical fp32 tensors, one at a time: what the model writers consume, so that a
// synthesized 7B model can be streamed to disk without being held in memory.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const LlamaConfig& config() const = 0;
  // Writes TensorElements(config(), id.kind) floats into `out`.
  virtual void Fill(const TensorId& id, std::span<float> out) const = 0;
};

class ModelWeightSource final : public WeightSource {
 public:
  explicit ModelWeightSource(const Model& model) : model_(model) {}
  const LlamaConfig& config() const override { return model_.config; }
  void Fill(const TensorId& id, std::span<float> out) const override;

 private:
  const Model& model_;
};

}  // namespace accllm
