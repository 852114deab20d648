// Rounding to the nearest integer, ties to even, as std::nearbyint does in the default rounding
// mode, but as plain float arithmetic the compiler can vectorize (nearbyint is a library call
// per element). Exact for |v| < 2^22, which covers every quantizer here (|v| <= 127). SIMD
// versions add and subtract kRoundHalfEvenShifter the same way.
#pragma once

namespace accllm {

// 1.5 * 2^23: adding it to a float below 2^22 in magnitude leaves no fraction bits.
inline constexpr float kRoundHalfEvenShifter = 12582912.0f;

inline float RoundHalfEven(float v) { return (v + kRoundHalfEvenShifter) - kRoundHalfEvenShifter; }

}  // namespace accllm
