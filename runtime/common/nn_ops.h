// The element-wise pieces of a LLaMA layer, shared by the reference forward pass and the engines
// so that both compute them identically.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/common/exp.h"
#include "runtime/common/lane_sum.h"

namespace accllm {

// sum a[i] * b[i], in order (the fp32 paths' dot product).
inline float Dot(const float* a, const float* b, int n) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// o = weight * x / rms(x), the squares summed in lane_sum.h's order (every device's)
inline void RmsNorm(float* o, const float* x, const float* weight, int size, float eps) {
  float ss = SquareSum(x, size);
  ss /= size;
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  for (int j = 0; j < size; j++) o[j] = weight[j] * (ss * x[j]);
}

// The maximum, e^(x - max) (exp.h: every device's e^x) and their sum in index order, then each
// divided by the sum.
inline void Softmax(float* x, int size) {
  float max_val = x[0];
  for (int i = 1; i < size; i++) max_val = std::max(max_val, x[i]);
  float sum = 0.0f;
  for (int i = 0; i < size; i++) {
    x[i] = Exp(x[i] - max_val);
    sum += x[i];
  }
  for (int i = 0; i < size; i++) x[i] /= sum;
}

// RoPE in the Meta/llama2.c layout: each adjacent pair (i, i+1) of a head is rotated by
// pos * theta^(-i / head_size). The angles depend only on the position, so they are computed
// once per token (head_size / 2 of them) and applied to every head of q and k.
struct RopeAngles {
  std::vector<float> cos, sin;

  void Compute(int head_size, int pos, float theta) {
    cos.resize(head_size / 2);
    sin.resize(head_size / 2);
    for (int i = 0; i < head_size; i += 2) {
      const float freq = 1.0f / std::pow(theta, i / static_cast<float>(head_size));
      const float val = pos * freq;
      cos[i / 2] = std::cos(val);
      sin[i / 2] = std::sin(val);
    }
  }

  // Rotates `vec`: n values (even), heads of 2 * cos.size() back to back; a last partial head is
  // rotated as far as it goes.
  void Apply(float* vec, int n) const { ApplyRope(vec, n, cos.data(), sin.data(), static_cast<int>(cos.size())); }

  // The same with the angles' cosines and sines given as arrays of `half` values.
  static void ApplyRope(float* vec, int n, const float* cos, const float* sin, int half) {
    for (int base = 0; base < n; base += 2 * half) {
      for (int j = 0; j < half && base + 2 * j < n; ++j) {
        const float v0 = vec[base + 2 * j];
        const float v1 = vec[base + 2 * j + 1];
        vec[base + 2 * j] = v0 * cos[j] - v1 * sin[j];
        vec[base + 2 * j + 1] = v0 * sin[j] + v1 * cos[j];
      }
    }
  }
};

inline void Rope(float* vec, int n, int head_size, int pos, float theta) {
  RopeAngles angles;
  angles.Compute(head_size, pos, theta);
  angles.Apply(vec, n);
}

// SwiGLU gate: hb = silu(hb) * hb2
inline void SwiGlu(float* hb, const float* hb2, int size) {
  for (int i = 0; i < size; i++) {
    float val = hb[i];
    val *= 1.0f / (1.0f + Exp(-val));  // silu(x) = x * sigmoid(x)
    hb[i] = val * hb2[i];
  }
}

}  // namespace accllm
