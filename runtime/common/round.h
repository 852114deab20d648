// Rounding to the nearest integer, ties to even, as std::nearbyint does in the default rounding
// mode, but as plain float arithmetic the compiler can vectorize (nearbyint is a library call
// per element). Exact for |v| < 2^22, which covers every quantizer here (|v| <= 127). SIMD
// versions add and subtract kRoundHalfEvenShifter the same way.
#pragma once

namespace accllm {

// 1.5 * 2^23: adding it to a float below 2^22 in magnitude leaves no fraction bits.
inline constexpr float kRoundHalfEvenShifter = 12582912.0f;

inline float RoundHalfEven(float v) { return (v + kRoundHalfEvenShifter) - kRoundHalfEvenShifter; }

// A quantizer's code as a float: RoundHalfEven(v) held to [lo, hi], and 0 for NaN (an input past
// the format's range), so that the conversion to an integer that follows is always defined.
// Written as selects before that one conversion, without a branch.
inline float RoundHalfEvenWithin(float v, float lo, float hi) {
  const float r = RoundHalfEven(v);
  const float held = r < lo ? lo : (r > hi ? hi : r);  // NaN passes through
  return r == r ? held : 0.0f;
}

}  // namespace accllm
