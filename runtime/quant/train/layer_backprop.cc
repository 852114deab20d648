#include "runtime/quant/train/layer_backprop.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/common/hadamard.h"
#include "runtime/common/nn_ops.h"
#include "runtime/cpu/kernels.h"
#include "runtime/quant/linalg.h"

namespace accllm {
namespace {

using Floats = std::vector<float>;

// d gain_j += sum over rows of d_out_j * x_j / rms(x): the gain's share of RmsNormRows.
void RmsNormGainBackward(const float* x, const float* inv_rms, const float* d_out, int rows, int cols, float* d_gain) {
  for (int t = 0; t < rows; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * cols;
    const float* dr = d_out + static_cast<int64_t>(t) * cols;
    for (int j = 0; j < cols; ++j) d_gain[j] += dr[j] * xr[j] * inv_rms[t];
  }
}

// RoPE on every row of m (rows = positions 0..), and its inverse (the transpose of each
// pair's rotation), which carries gradients back through it.
void RopeRows(float* m, int rows, int width, const LlamaConfig& c, bool inverse) {
  RopeAngles angles;
  for (int t = 0; t < rows; ++t) {
    angles.Compute(c.head_size(), t, c.rope_theta);
    if (inverse) {
      for (float& s : angles.sin) s = -s;
    }
    angles.Apply(m + static_cast<int64_t>(t) * width, width);
  }
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void RmsNormRows(const float* x, const float* gain, int rows, int cols, float eps, float* out, float* inv_rms) {
  for (int t = 0; t < rows; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * cols;
    const float r = 1.0f / std::sqrt(SquareSum(xr, cols) / cols + eps);
    inv_rms[t] = r;
    float* o = out + static_cast<int64_t>(t) * cols;
    for (int j = 0; j < cols; ++j) o[j] = gain[j] * (r * xr[j]);
  }
}

// dx += d/dx of (gain * x * r) applied to d_out, with r = 1 / rms(x):
//   dx_j = r g_j d_j - x_j r^3 (sum_i g_i d_i x_i) / cols
void RmsNormRowsBackward(const float* x, const float* gain, const float* inv_rms, const float* d_out, int rows,
                         int cols, float* dx) {
  for (int t = 0; t < rows; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * cols;
    const float* dr = d_out + static_cast<int64_t>(t) * cols;
    float* out = dx + static_cast<int64_t>(t) * cols;
    const float r = inv_rms[t];
    float dot = 0.0f;
    for (int j = 0; j < cols; ++j) dot += gain[j] * dr[j] * xr[j];
    const float k = r * r * r * dot / cols;
    for (int j = 0; j < cols; ++j) out[j] += r * gain[j] * dr[j] - k * xr[j];
  }
}

LayerGradients::LayerGradients(const LlamaConfig& c, bool with_norm_gains)
    : wq(static_cast<std::size_t>(c.dim) * c.dim),
      wk(static_cast<std::size_t>(c.kv_dim()) * c.dim),
      wv(static_cast<std::size_t>(c.kv_dim()) * c.dim),
      wo(static_cast<std::size_t>(c.dim) * c.dim),
      w1(static_cast<std::size_t>(c.hidden_dim) * c.dim),
      w2(static_cast<std::size_t>(c.dim) * c.hidden_dim),
      w3(static_cast<std::size_t>(c.hidden_dim) * c.dim),
      rms_att(with_norm_gains ? c.dim : 0),
      rms_ffn(with_norm_gains ? c.dim : 0) {}

void LayerGradients::Zero() {
  for (Floats* g : {&wq, &wk, &wv, &wo, &w1, &w2, &w3, &rms_att, &rms_ffn}) std::fill(g->begin(), g->end(), 0.0f);
}

void LayerForward(const LlamaConfig& c, const LayerWeights& w, const float* x, int tokens, float* y,
                  LayerActivations* saved) {
  const int T = tokens, D = c.dim, KV = c.kv_dim(), H = c.hidden_dim, hs = c.head_size();
  const std::size_t td = static_cast<std::size_t>(T) * D, th = static_cast<std::size_t>(T) * H;
  LayerActivations local;
  LayerActivations& s = saved != nullptr ? *saved : local;
  s.tokens = T;
  s.x.assign(x, x + td);
  s.att_rms.resize(T);
  s.a.resize(td);
  s.q.resize(td);
  s.k.resize(static_cast<std::size_t>(T) * KV);
  s.v.resize(static_cast<std::size_t>(T) * KV);
  s.probs.resize(static_cast<std::size_t>(s.keep_probs ? c.n_heads : 1) * T * T);
  s.o.resize(td);
  s.x2.resize(td);
  s.ffn_rms.resize(T);
  s.b.resize(td);
  s.gate.resize(th);
  s.up.resize(th);
  s.h.resize(th);

  // attention: norm, projections, RoPE
  RmsNormRows(x, w.rms_att, T, D, c.norm_eps, s.a.data(), s.att_rms.data());
  Gemm(Trans::kNo, Trans::kYes, T, D, D, 1.0f, s.a.data(), D, w.wq, D, 0.0f, s.q.data(), D);
  Gemm(Trans::kNo, Trans::kYes, T, KV, D, 1.0f, s.a.data(), D, w.wk, D, 0.0f, s.k.data(), KV);
  Gemm(Trans::kNo, Trans::kYes, T, KV, D, 1.0f, s.a.data(), D, w.wv, D, 0.0f, s.v.data(), KV);
  RopeRows(s.q.data(), T, D, c, false);
  RopeRows(s.k.data(), T, KV, c, false);

  // each head: causal softmax of q k^T / sqrt(head_size), then the weighted sum of values (the
  // CPU's own softmax kernel: every path gives nn_ops.h's Softmax bit for bit)
  static const SoftmaxFn softmax = [] {
    const absl::StatusOr<const CpuKernels*> kernels = SelectedKernels();
    return kernels.ok() ? (*kernels)->softmax : &Softmax;
  }();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int h = 0; h < c.n_heads; ++h) {
    const int kvh = h / c.kv_mul();
    float* p = s.probs.data() + static_cast<std::size_t>(s.keep_probs ? h : 0) * T * T;
    Gemm(Trans::kNo, Trans::kYes, T, T, hs, scale, s.q.data() + h * hs, D, s.k.data() + kvh * hs, KV, 0.0f, p, T);
    for (int i = 0; i < T; ++i) {
      float* row = p + static_cast<std::size_t>(i) * T;
      softmax(row, i + 1);
      std::fill(row + i + 1, row + T, 0.0f);
    }
    Gemm(Trans::kNo, Trans::kNo, T, hs, T, 1.0f, p, T, s.v.data() + kvh * hs, KV, 0.0f, s.o.data() + h * hs, D);
  }
  std::copy(x, x + td, s.x2.begin());
  Gemm(Trans::kNo, Trans::kYes, T, D, D, 1.0f, s.o.data(), D, w.wo, D, 1.0f, s.x2.data(), D);

  // FFN: norm, SwiGLU, (the rotation of the down projection's input), down projection
  RmsNormRows(s.x2.data(), w.rms_ffn, T, D, c.norm_eps, s.b.data(), s.ffn_rms.data());
  Gemm(Trans::kNo, Trans::kYes, T, H, D, 1.0f, s.b.data(), D, w.w1, D, 0.0f, s.gate.data(), H);
  Gemm(Trans::kNo, Trans::kYes, T, H, D, 1.0f, s.b.data(), D, w.w3, D, 0.0f, s.up.data(), H);
  for (std::size_t i = 0; i < th; ++i) s.h[i] = s.gate[i] * Sigmoid(s.gate[i]) * s.up[i];
  if (c.ffn_hadamard_block > 0) {
    for (int t = 0; t < T; ++t) BlockHadamard(s.h.data() + static_cast<std::size_t>(t) * H, H, c.ffn_hadamard_block);
  }
  std::copy(s.x2.begin(), s.x2.end(), y);
  Gemm(Trans::kNo, Trans::kYes, T, D, H, 1.0f, s.h.data(), H, w.w2, H, 1.0f, y, D);
}

void LayerBackward(const LlamaConfig& c, const LayerWeights& w, const LayerActivations& s, const float* dy,
                   LayerGradients& g, float* dx) {
  const int T = s.tokens, D = c.dim, KV = c.kv_dim(), H = c.hidden_dim, hs = c.head_size();
  const std::size_t td = static_cast<std::size_t>(T) * D, th = static_cast<std::size_t>(T) * H;

  // FFN: y = x2 + h w2^T
  Floats dh(th);
  Gemm(Trans::kNo, Trans::kNo, T, H, D, 1.0f, dy, D, w.w2, H, 0.0f, dh.data(), H);
  Gemm(Trans::kYes, Trans::kNo, D, H, T, 1.0f, dy, D, s.h.data(), H, 1.0f, g.w2.data(), H);
  if (c.ffn_hadamard_block > 0) {  // the normalized Hadamard is symmetric and its own inverse
    for (int t = 0; t < T; ++t) BlockHadamard(dh.data() + static_cast<std::size_t>(t) * H, H, c.ffn_hadamard_block);
  }
  // h = silu(gate) * up, silu'(x) = sigmoid(x) (1 + x (1 - sigmoid(x)))
  Floats dgate(th), dup(th);
  for (std::size_t i = 0; i < th; ++i) {
    const float sg = Sigmoid(s.gate[i]);
    dup[i] = dh[i] * s.gate[i] * sg;
    dgate[i] = dh[i] * s.up[i] * sg * (1.0f + s.gate[i] * (1.0f - sg));
  }
  Gemm(Trans::kYes, Trans::kNo, H, D, T, 1.0f, dgate.data(), H, s.b.data(), D, 1.0f, g.w1.data(), D);
  Gemm(Trans::kYes, Trans::kNo, H, D, T, 1.0f, dup.data(), H, s.b.data(), D, 1.0f, g.w3.data(), D);
  Floats db(td);
  Gemm(Trans::kNo, Trans::kNo, T, D, H, 1.0f, dgate.data(), H, w.w1, D, 0.0f, db.data(), D);
  Gemm(Trans::kNo, Trans::kNo, T, D, H, 1.0f, dup.data(), H, w.w3, D, 1.0f, db.data(), D);
  Floats dx2(dy, dy + td);
  RmsNormRowsBackward(s.x2.data(), w.rms_ffn, s.ffn_rms.data(), db.data(), T, D, dx2.data());
  if (g.norm_gains()) RmsNormGainBackward(s.x2.data(), s.ffn_rms.data(), db.data(), T, D, g.rms_ffn.data());

  // attention: x2 = x + o wo^T
  Gemm(Trans::kYes, Trans::kNo, D, D, T, 1.0f, dx2.data(), D, s.o.data(), D, 1.0f, g.wo.data(), D);
  Floats d_o(td);
  Gemm(Trans::kNo, Trans::kNo, T, D, D, 1.0f, dx2.data(), D, w.wo, D, 0.0f, d_o.data(), D);
  Floats dq(td, 0.0f), dk(static_cast<std::size_t>(T) * KV, 0.0f), dv(static_cast<std::size_t>(T) * KV, 0.0f);
  Floats dp(static_cast<std::size_t>(T) * T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int h = 0; h < c.n_heads; ++h) {
    const int kvh = h / c.kv_mul();
    const float* p = s.probs.data() + static_cast<std::size_t>(h) * T * T;
    Gemm(Trans::kNo, Trans::kYes, T, T, hs, 1.0f, d_o.data() + h * hs, D, s.v.data() + kvh * hs, KV, 0.0f, dp.data(), T);
    Gemm(Trans::kYes, Trans::kNo, T, hs, T, 1.0f, p, T, d_o.data() + h * hs, D, 1.0f, dv.data() + kvh * hs, KV);
    // softmax: d score_ij = p_ij (dp_ij - sum_k p_ik dp_ik); masked entries have p = 0
    for (int i = 0; i < T; ++i) {
      const float* pr = p + static_cast<std::size_t>(i) * T;
      float* dr = dp.data() + static_cast<std::size_t>(i) * T;
      float dot = 0.0f;
      for (int j = 0; j <= i; ++j) dot += pr[j] * dr[j];
      for (int j = 0; j < T; ++j) dr[j] = pr[j] * (dr[j] - dot);
    }
    Gemm(Trans::kNo, Trans::kNo, T, hs, T, scale, dp.data(), T, s.k.data() + kvh * hs, KV, 0.0f, dq.data() + h * hs, D);
    Gemm(Trans::kYes, Trans::kNo, T, hs, T, scale, dp.data(), T, s.q.data() + h * hs, D, 1.0f, dk.data() + kvh * hs, KV);
  }
  RopeRows(dq.data(), T, D, c, true);
  RopeRows(dk.data(), T, KV, c, true);
  Gemm(Trans::kYes, Trans::kNo, D, D, T, 1.0f, dq.data(), D, s.a.data(), D, 1.0f, g.wq.data(), D);
  Gemm(Trans::kYes, Trans::kNo, KV, D, T, 1.0f, dk.data(), KV, s.a.data(), D, 1.0f, g.wk.data(), D);
  Gemm(Trans::kYes, Trans::kNo, KV, D, T, 1.0f, dv.data(), KV, s.a.data(), D, 1.0f, g.wv.data(), D);
  if (dx == nullptr && !g.norm_gains()) return;
  Floats da(td);
  Gemm(Trans::kNo, Trans::kNo, T, D, D, 1.0f, dq.data(), D, w.wq, D, 0.0f, da.data(), D);
  Gemm(Trans::kNo, Trans::kNo, T, D, KV, 1.0f, dk.data(), KV, w.wk, D, 1.0f, da.data(), D);
  Gemm(Trans::kNo, Trans::kNo, T, D, KV, 1.0f, dv.data(), KV, w.wv, D, 1.0f, da.data(), D);
  if (g.norm_gains()) RmsNormGainBackward(s.x.data(), s.att_rms.data(), da.data(), T, D, g.rms_att.data());
  if (dx == nullptr) return;
  std::copy(dx2.begin(), dx2.end(), dx);
  RmsNormRowsBackward(s.x.data(), w.rms_att, s.att_rms.data(), da.data(), T, D, dx);
}

}  // namespace accllm
