#include "runtime/reference/forward.h"

#include <cassert>
#include <cmath>
#include <cstring>

#include "runtime/common/hadamard.h"
#include "runtime/common/nn_ops.h"

namespace accllm {
namespace {

// W (d,n) @ x (n) -> xout (d). By far the most time is spent here.
void MatMul(float* xout, const float* x, const float* w, int n, int d) {
  for (int i = 0; i < d; i++) {
    const float* row = w + static_cast<int64_t>(i) * n;
    float val = 0.0f;
    for (int j = 0; j < n; j++) val += row[j] * x[j];
    xout[i] = val;
  }
}

}  // namespace

RunState::RunState(const LlamaConfig& c, int context)
    : context_len(context),
      x(c.dim),
      xb(c.dim),
      xb2(c.dim),
      hb(c.hidden_dim),
      hb2(c.hidden_dim),
      q(c.dim),
      att(static_cast<std::size_t>(c.n_heads) * context),
      logits(c.vocab_size),
      key_cache(static_cast<std::size_t>(c.n_layers) * context * c.kv_dim()),
      value_cache(static_cast<std::size_t>(c.n_layers) * context * c.kv_dim()) {}

std::span<const float> Forward(const Model& model, RunState& s, int token, int pos, ForwardObserver* observer) {
  // a few convenience variables
  const LlamaConfig& p = model.config;
  const LlamaWeights& w = model.weights;
  assert(token >= 0 && token < p.vocab_size && pos >= 0 && pos < s.context_len);
  float* x = s.x.data();
  const int dim = p.dim;
  const int kv_dim = p.kv_dim();
  const int kv_mul = p.kv_mul();
  const int hidden_dim = p.hidden_dim;
  const int head_size = p.head_size();

  // copy the token embedding into x
  std::memcpy(x, w.token_embedding + static_cast<int64_t>(token) * dim, dim * sizeof(float));

  for (int l = 0; l < p.n_layers; l++) {
    const LayerWeights& lw = w.layers[l];

    // attention rmsnorm
    RmsNorm(s.xb.data(), x, lw.rms_att, dim, p.norm_eps);

    if (observer) observer->OnLinearInput(l, ForwardObserver::Input::kAttention, s.xb);

    // qkv matmuls for this position; k and v go straight into the cache
    const int64_t loff = static_cast<int64_t>(l) * s.context_len * kv_dim;
    float* k = s.key_cache.data() + loff + static_cast<int64_t>(pos) * kv_dim;
    float* v = s.value_cache.data() + loff + static_cast<int64_t>(pos) * kv_dim;
    MatMul(s.q.data(), s.xb.data(), lw.wq, dim, dim);
    MatMul(k, s.xb.data(), lw.wk, dim, kv_dim);
    MatMul(v, s.xb.data(), lw.wv, dim, kv_dim);

    // RoPE: rotate each adjacent pair of q and k by an angle that grows with the position
    Rope(s.q.data(), dim, head_size, pos, p.rope_theta);
    Rope(k, kv_dim, head_size, pos, p.rope_theta);

    // multihead attention: every head attends to positions 0..pos
    for (int h = 0; h < p.n_heads; h++) {
      const float* q = s.q.data() + h * head_size;
      float* att = s.att.data() + static_cast<int64_t>(h) * s.context_len;
      const int kv_head = h / kv_mul;
      for (int t = 0; t <= pos; t++) {
        const float* kt = s.key_cache.data() + loff + static_cast<int64_t>(t) * kv_dim + kv_head * head_size;
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) score += q[i] * kt[i];
        att[t] = score / std::sqrt(static_cast<float>(head_size));
      }
      Softmax(att, pos + 1);

      // weighted sum of the values into xb
      float* xb = s.xb.data() + h * head_size;
      std::memset(xb, 0, head_size * sizeof(float));
      for (int t = 0; t <= pos; t++) {
        const float* vt = s.value_cache.data() + loff + static_cast<int64_t>(t) * kv_dim + kv_head * head_size;
        const float a = att[t];
        for (int i = 0; i < head_size; i++) xb[i] += a * vt[i];
      }
    }

    // output projection, then the residual connection
    if (observer) observer->OnLinearInput(l, ForwardObserver::Input::kAttentionOutput, s.xb);
    MatMul(s.xb2.data(), s.xb.data(), lw.wo, dim, dim);
    for (int i = 0; i < dim; i++) x[i] += s.xb2[i];

    // ffn rmsnorm
    RmsNorm(s.xb.data(), x, lw.rms_ffn, dim, p.norm_eps);

    // SwiGLU: self.w2(F.silu(self.w1(x)) * self.w3(x))
    if (observer) observer->OnLinearInput(l, ForwardObserver::Input::kFfn, s.xb);
    MatMul(s.hb.data(), s.xb.data(), lw.w1, dim, hidden_dim);
    MatMul(s.hb2.data(), s.xb.data(), lw.w3, dim, hidden_dim);
    SwiGlu(s.hb.data(), s.hb2.data(), hidden_dim);
    if (p.ffn_hadamard_block > 0) BlockHadamard(s.hb.data(), hidden_dim, p.ffn_hadamard_block);  // rotated weights
    if (observer) observer->OnLinearInput(l, ForwardObserver::Input::kFfnDown, s.hb);
    MatMul(s.xb.data(), s.hb.data(), lw.w2, hidden_dim, dim);

    // residual connection
    for (int i = 0; i < dim; i++) x[i] += s.xb[i];
  }

  // final rmsnorm, then the classifier into logits
  RmsNorm(x, x, w.rms_final, dim, p.norm_eps);
  MatMul(s.logits.data(), x, w.classifier, dim, p.vocab_size);
  return s.logits;
}

}  // namespace accllm
