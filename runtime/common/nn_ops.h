// The element-wise pieces of a LLaMA layer, shared by the reference forward pass and the engines
// so that both compute them identically.
#pragma once

#include <algorithm>
#include <cmath>

namespace accllm {

// o = weight * x / rms(x)
inline void RmsNorm(float* o, const float* x, const float* weight, int size, float eps) {
  float ss = 0.0f;
  for (int j = 0; j < size; j++) ss += x[j] * x[j];
  ss /= size;
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  for (int j = 0; j < size; j++) o[j] = weight[j] * (ss * x[j]);
}

inline void Softmax(float* x, int size) {
  float max_val = x[0];
  for (int i = 1; i < size; i++) max_val = std::max(max_val, x[i]);
  float sum = 0.0f;
  for (int i = 0; i < size; i++) {
    x[i] = std::exp(x[i] - max_val);
    sum += x[i];
  }
  for (int i = 0; i < size; i++) x[i] /= sum;
}

// Rotates each adjacent pair (i, i+1) of `vec` (n values, heads of head_size back to back) by
// pos * theta^(-(i % head_size) / head_size): RoPE in the Meta/llama2.c layout.
inline void Rope(float* vec, int n, int head_size, int pos, float theta) {
  for (int i = 0; i < n; i += 2) {
    const int head_dim = i % head_size;
    const float freq = 1.0f / std::pow(theta, head_dim / static_cast<float>(head_size));
    const float val = pos * freq;
    const float fcr = std::cos(val);
    const float fci = std::sin(val);
    const float v0 = vec[i];
    const float v1 = vec[i + 1];
    vec[i] = v0 * fcr - v1 * fci;
    vec[i + 1] = v0 * fci + v1 * fcr;
  }
}

// SwiGLU gate: hb = silu(hb) * hb2
inline void SwiGlu(float* hb, const float* hb2, int size) {
  for (int i = 0; i < size; i++) {
    float val = hb[i];
    val *= 1.0f / (1.0f + std::exp(-val));  // silu(x) = x * sigmoid(x)
    hb[i] = val * hb2[i];
  }
}

}  // namespace accllm
