// e^x as one fixed sequence of float operations, so that every CPU path (scalar, and eight lanes
// at a time) and the accelerator's units compute the same value for every input: the
// softmax of attention and the SiLU of the FFN. (std::exp is the C library's, which differs
// between libraries and cannot be vectorized to the same bits; an HLS build's hls::exp is another
// function again.) Within 1 ulp of a correctly rounded e^x over the range below (checked in
// the tests against std::exp).
//
//   x = n ln2 + r, |r| <= ln2 / 2   (n by round-half-even, ln2 in two parts: n * kLn2Hi is exact)
//   e^r = 1 + r + r^2 p(r)          (Cephes' expf polynomial, by Horner with fused multiply-adds)
//   e^x = e^r * 2^n                 (2^n built from its exponent bits)
//
// Above kExpMaxArgument the result is +inf (the true value overflows from 88.72), below
// kExpMinArgument 0 (where e^x is no longer a normal float); NaN stays NaN. C++17 (the HLS units
// include it): no std::bit_cast.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace accllm {

inline constexpr float kExpMaxArgument = 88.0f;
inline constexpr float kExpMinArgument = -87.33654f;  // e^x = 2^-126
inline constexpr float kExpLog2e = 1.44269504088896341f;
inline constexpr float kExpLn2Hi = 0.693359375f;
inline constexpr float kExpLn2Lo = -2.12194440e-4f;
inline constexpr float kExpRoundShifter = 12582912.0f;  // 1.5 * 2^23 (round.h)
inline constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                      4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline float Exp(float x) {
  const float xc = std::fmin(std::fmax(x, kExpMinArgument), kExpMaxArgument);  // NaN -> the minimum
  const float n = (xc * kExpLog2e + kExpRoundShifter) - kExpRoundShifter;
  const float r = std::fma(-n, kExpLn2Lo, std::fma(-n, kExpLn2Hi, xc));
  float p = kExpPoly[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpPoly[i]);
  const float e_r = std::fma(p, r * r, r) + 1.0f;
  const int32_t exponent_bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &exponent_bits, sizeof two_n);
  const float y = e_r * two_n;
  if (x > kExpMaxArgument) return std::numeric_limits<float>::infinity();
  if (x < kExpMinArgument) return 0.0f;
  return x != x ? x : y;
}

}  // namespace accllm
