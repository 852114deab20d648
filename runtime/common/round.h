// Rounding to the nearest integer, ties to even, as std::nearbyint does in the default rounding
// mode, but as plain float arithmetic the compiler can vectorize (nearbyint is a library call
// per element). Exact for |v| < 2^22, which covers every quantizer here (|v| <= 127).
#pragma once

namespace accllm {

inline float RoundHalfEven(float v) {
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it leaves no fraction bits
  return (v + kShifter) - kShifter;
}

}  // namespace accllm
