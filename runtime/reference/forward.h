// The fp32 reference forward pass of a LLaMA model, one token at a time (after llama2.c's
// run.c). It is deliberately plain: it is the oracle every faster path is tested against.
#pragma once

#include <span>
#include <vector>

#include "runtime/model/model.h"

namespace accllm {

// The wave of activations of one sequence, plus its (full, unbounded-window) KV cache.
struct RunState {
  RunState(const LlamaConfig& config, int context_len);

  int context_len;           // positions the KV cache holds
  std::vector<float> x;      // activation at the current position (dim)
  std::vector<float> xb;     // same, inside a residual branch (dim)
  std::vector<float> xb2;    // scratch (dim)
  std::vector<float> hb;     // FFN hidden buffer (hidden_dim)
  std::vector<float> hb2;    // FFN hidden buffer (hidden_dim)
  std::vector<float> q;      // query (dim)
  std::vector<float> att;    // attention scores (n_heads, context_len)
  std::vector<float> logits; // output logits (vocab_size)
  std::vector<float> key_cache;    // (n_layers, context_len, kv_dim)
  std::vector<float> value_cache;  // (n_layers, context_len, kv_dim)
};

// Sees the input of every linear layer as the forward pass runs (calibration statistics).
class ForwardObserver {
 public:
  enum class Input { kAttention, kAttentionOutput, kFfn, kFfnDown };  // wq/wk/wv, wo, w1/w3, w2
  virtual ~ForwardObserver() = default;
  virtual void OnLinearInput(int layer, Input input, std::span<const float> x) = 0;
};

// Runs `token` at position `pos` through the model, filling the KV cache at `pos`, and returns
// the logits for the next token.
// note: call only with 0 <= token < vocab_size and 0 <= pos < s.context_len, after positions
// 0..pos-1 have been run in order.
std::span<const float> Forward(const Model& model, RunState& s, int token, int pos,
                               ForwardObserver* observer = nullptr);

}  // namespace accllm
