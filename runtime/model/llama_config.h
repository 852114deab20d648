// Hyperparameters of a LLaMA-architecture transformer, and the catalogue of its tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace accllm {

struct LlamaConfig {
  int dim = 0;              // transformer width (hidden_size)
  int hidden_dim = 0;       // FFN inner width (intermediate_size)
  int n_layers = 0;
  int n_heads = 0;          // query heads
  int n_kv_heads = 0;       // key/value heads (grouped-query attention when < n_heads)
  int vocab_size = 0;
  int max_seq_len = 0;      // trained context length
  float norm_eps = 1e-5f;   // RMSNorm epsilon
  float rope_theta = 10000.0f;
  bool shared_classifier = true;  // classifier weights are the token embedding
  // When > 0, the down projection reads its input Hadamard-transformed in blocks of this many
  // features (a power of two dividing hidden_dim): the weights were rotated to match (quantization's
  // incoherence processing, runtime/quant/rotation.h). 0: as trained.
  int ffn_hadamard_block = 0;

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
  int kv_mul() const { return n_heads / n_kv_heads; }  // query heads per kv head
};

// Checks that the dimensions are positive, divide evenly and stay within sane bounds, so that
// every size computed from them fits in 64 bits.
absl::Status ValidateConfig(const LlamaConfig& config);

// Named shapes for the synthesizer and benchmarks: llama2-7b, llama2-13b, tinyllama-1.1b, and
// "dim=..,ffn=..,layers=..,heads=..[,kv_heads=..][,vocab=..][,seq=..]" for anything else.
absl::StatusOr<LlamaConfig> ParseShape(const std::string& spec);

// The tensors of a LLaMA model. Matrices are row-major (out_features, in_features); the
// query/key rows use the Meta/llama2.c RoPE layout (rotation pairs are adjacent elements).
enum class TensorKind {
  kTokenEmbedding,  // (vocab, dim)
  kAttnNorm,        // (dim)               per layer
  kWq,              // (n_heads*hs, dim)   per layer
  kWk,              // (kv_dim, dim)       per layer
  kWv,              // (kv_dim, dim)       per layer
  kWo,              // (dim, n_heads*hs)   per layer
  kFfnNorm,         // (dim)               per layer
  kW1,              // (hidden, dim)       per layer: gate
  kW2,              // (dim, hidden)       per layer: down
  kW3,              // (hidden, dim)       per layer: up
  kFinalNorm,       // (dim)
  kClassifier,      // (vocab, dim)        absent when shared with the embedding
};

struct TensorId {
  TensorKind kind;
  int layer = -1;  // -1 for tensors that are not per layer
};

// Tensor groups reported by `accllm inspect` (and, later, bits per weight).
enum class TensorGroup { kEmbedding, kAttention, kFfn, kNorm, kClassifier };
const char* TensorGroupName(TensorGroup group);
TensorGroup GroupOf(TensorKind kind);

bool IsPerLayer(TensorKind kind);
// The seven matrices of a layer (q, k, v, o, gate, down, up): what W2 compresses.
bool IsLinear(TensorKind kind);
std::vector<int64_t> TensorShape(const LlamaConfig& config, TensorKind kind);
int64_t TensorElements(const LlamaConfig& config, TensorKind kind);

// Hugging Face name of a tensor, e.g. "model.layers.3.self_attn.q_proj.weight".
std::string HfTensorName(const TensorId& id);

// Every tensor of the model in a fixed order (embedding, per-layer tensors layer by layer,
// final norm, classifier if not shared).
std::vector<TensorId> AllTensors(const LlamaConfig& config);

int64_t ParameterCount(const LlamaConfig& config);

}  // namespace accllm
