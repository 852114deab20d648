// The one order in which every device adds up floats: the CPU kernels of every instruction set,
// and the accelerator's units (fpga/kernels), so that all of them give the same logits bit for bit.
//
// A sum of products over n elements keeps kSumLanes partial sums: lane l accumulates, by fused
// multiply-adds in index order, the products at the indices i < n8 = n / 8 * 8 with i % 8 == l.
// The lanes are combined by one fixed tree, the order of a 256-bit horizontal add:
//
//   ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
//
// and the tail i >= n8 is added to that, in index order, by fused multiply-adds. A 256-bit path
// holds the lanes in one register; a 512-bit path holds two such sums (two rows, or two keys)
// side by side; the scalar path and the HLS units keep an array of eight.
//
// Element-wise accumulations (out[d] += p_i * v_i over i) are fused multiply-adds in i order.
// The build turns off the compiler's own contraction of a * b + c (-ffp-contract=off), so that
// only these written-out fmas fuse, on every path.
#pragma once

#include <cmath>

namespace accllm {

inline constexpr int kSumLanes = 8;

inline float CombineLanes(const float* lane) {
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

// sum a(i) * b(i) for i < n in the order above; a and b return the i-th factors as floats.
template <typename A, typename B>
inline float LaneDot(const A& a, const B& b, int n) {
  float lane[kSumLanes] = {};
  const int n8 = n / kSumLanes * kSumLanes;
  for (int i = 0; i < n8; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) lane[l] = std::fma(a(i + l), b(i + l), lane[l]);
  }
  float sum = CombineLanes(lane);
  for (int i = n8; i < n; ++i) sum = std::fma(a(i), b(i), sum);
  return sum;
}

// The same for a length known at compile time (the accelerator's units: fixed trip counts).
template <int N, typename A, typename B>
inline float LaneDotN(const A& a, const B& b) {
  constexpr int kFull = N / kSumLanes * kSumLanes;
  float lane[kSumLanes] = {};
  for (int i = 0; i < kFull; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) lane[l] = std::fma(a(i + l), b(i + l), lane[l]);
  }
  float sum = CombineLanes(lane);
  for (int i = kFull; i < N; ++i) sum = std::fma(a(i), b(i), sum);
  return sum;
}

}  // namespace accllm
