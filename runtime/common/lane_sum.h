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
// A plain sum (a query's sum, which KV4 scores use) keeps the same lanes and tree, with adds:
// lane l adds the elements at i < n8 with i % 8 == l in index order, then the tail in order.
//
// A sum of squares (RMSNorm's) is wider, so that a unit can take a 512-bit beat (16 floats) per
// cycle while each partial sum waits out its add's latency: kNormLanes = 64 partial sums, lane l
// adding (a product, then an add) the squares at i < n64 = n / 64 * 64 with i % 64 == l in index
// order; then the upper half of the lanes is added onto the lower half until one is left
// (lane[l] += lane[l + 32], then + 16, ..., + 1), and the tail i >= n64 in index order.
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

// sum x[i] for i < n in the order above.
inline float LaneSum(const float* x, int n) {
  float lane[kSumLanes] = {};
  const int n8 = n / kSumLanes * kSumLanes;
  for (int i = 0; i < n8; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) lane[l] += x[i + l];
  }
  float sum = CombineLanes(lane);
  for (int i = n8; i < n; ++i) sum += x[i];
  return sum;
}

inline constexpr int kNormLanes = 64;

// sum x[i] * x[i] for i < n in the order above.
inline float SquareSum(const float* x, int n) {
  float lane[kNormLanes] = {};
  const int n64 = n / kNormLanes * kNormLanes;
  for (int i = 0; i < n64; i += kNormLanes) {
    for (int l = 0; l < kNormLanes; ++l) lane[l] += x[i + l] * x[i + l];
  }
  for (int width = kNormLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  }
  float sum = lane[0];
  for (int i = n64; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

}  // namespace accllm
