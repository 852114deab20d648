// The normalized Walsh-Hadamard transform, in place: an orthonormal rotation that is its own
// inverse. Rotating each cached key and value head vector before 4-bit quantization spreads an
// outlier channel's energy over the whole vector, so one scale per vector fits it better
// (QuaRot-style); attention rotates the query the same way (dot products are unchanged) and
// rotates its output back.
#pragma once

#include <cmath>

namespace accllm {

constexpr bool IsPowerOfTwo(int n) { return n > 0 && (n & (n - 1)) == 0; }

// note: call only with IsPowerOfTwo(n).
inline void Hadamard(float* x, int n) {
  for (int len = 1; len < n; len <<= 1) {
    for (int i = 0; i < n; i += 2 * len) {
      for (int j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int i = 0; i < n; ++i) x[i] *= scale;
}

// Hadamard on each consecutive block of `block` values of x (n a multiple of block).
inline void BlockHadamard(float* x, int n, int block) {
  for (int i = 0; i < n; i += block) Hadamard(x + i, block);
}

}  // namespace accllm
