// One LLaMA layer over a whole sequence in fp32, forward and backward, for training-time code
// (block-wise reconstruction of quantized weights). The forward pass computes what the reference
// forward pass computes token by token (positions 0.., causal attention), as matrix products.
// The backward pass takes the gradient of the layer's output and returns the gradients of its
// input, of its seven linear weights and (when asked for) of its two norm gains.
#pragma once

#include <vector>

#include "runtime/model/llama_config.h"
#include "runtime/model/model.h"

namespace accllm {

// out = gain * x / rms(x), row by row; inv_rms[t] = 1 / rms of row t.
void RmsNormRows(const float* x, const float* gain, int rows, int cols, float eps, float* out, float* inv_rms);
// dx += the gradient of RmsNormRows' input, from d_out (the gain fixed).
void RmsNormRowsBackward(const float* x, const float* gain, const float* inv_rms, const float* d_out, int rows,
                         int cols, float* dx);

// What the backward pass needs from the forward pass over one sequence.
struct LayerActivations {
  int tokens = 0;
  std::vector<float> x;          // input (tokens x dim)
  std::vector<float> att_rms;    // 1 / rms of each input row
  std::vector<float> a;          // attention input after the norm (tokens x dim)
  std::vector<float> q, k, v;    // after RoPE (q, k); tokens x dim, tokens x kv_dim
  std::vector<float> probs;      // attention probabilities (heads x tokens x tokens)
  // false: probs holds one head at a time, for a caller that wants the activations but not the
  // backward pass (calibration statistics); at 4096 tokens and 32 heads that is 2 GB less.
  bool keep_probs = true;
  std::vector<float> o;          // attention output before wo (tokens x dim)
  std::vector<float> x2;         // residual after attention (tokens x dim)
  std::vector<float> ffn_rms;    // 1 / rms of each x2 row
  std::vector<float> b;          // FFN input after the norm (tokens x dim)
  std::vector<float> gate, up;   // tokens x hidden
  std::vector<float> h;          // input of the down projection (tokens x hidden)
};

// y (tokens x dim) = the layer applied to x (tokens x dim, positions 0..tokens-1). With
// `saved`, keeps what LayerBackward needs.
void LayerForward(const LlamaConfig& c, const LayerWeights& w, const float* x, int tokens, float* y,
                  LayerActivations* saved = nullptr);

// Gradients of the seven linear weights, each the shape of its weight, and of the norm gains
// (dim each) when constructed with `with_norm_gains`.
struct LayerGradients {
  std::vector<float> wq, wk, wv, wo, w1, w2, w3;
  std::vector<float> rms_att, rms_ffn;  // empty unless asked for
  explicit LayerGradients(const LlamaConfig& c, bool with_norm_gains = false);
  bool norm_gains() const { return !rms_att.empty(); }
  void Zero();
};

// From dy (tokens x dim), the gradient of the loss with respect to the layer's output: adds
// the weights' gradients into `grads` and writes the input's gradient into dx (unless null).
void LayerBackward(const LlamaConfig& c, const LayerWeights& w, const LayerActivations& saved, const float* dy,
                   LayerGradients& grads, float* dx);

}  // namespace accllm
