#include "fpga/kernels/elementwise.h"

#include <cmath>

#include "fpga/kernels/cycle_count.h"
#include "runtime/common/a8_code.h"
#include "runtime/common/exp.h"
#include "runtime/common/lane_sum.h"

namespace accllm::hls {
namespace {

// A pipelined loop over n elements, a beat of kElementLanes per cycle.
int64_t BeatLoopCycles(int64_t n) { return (n + kElementLanes - 1) / kElementLanes + kLoopDepth; }

// A8 codes of `size` values whose absolute maximum is `amax`, zero-padded to cols_padded, and the
// sum of each group's codes: the CPU's QuantizeA8 (runtime/quant/a8.h), value for value. Groups
// are whole beats (group sizes are powers of two from 32).
void QuantizeA8(const float* values, float amax, int size, int cols_padded, int group_size, int8_t* codes,
                float* act_scale, int32_t* group_sums, CycleTally& tally) {
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  *act_scale = amax / 127.0f;
  tally.Add(kDivideLatency);
  int32_t sum = 0;
  for (int j0 = 0; j0 < cols_padded; j0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
    int32_t beat = 0;
    for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
      const int j = j0 + l;
      const int8_t q = j < size ? A8Code(values[j], inverse) : int8_t{0};
      codes[j] = q;
      beat += q;
    }
    sum += beat;
    if ((j0 + kElementLanes) % group_size == 0) {
      group_sums[j0 / group_size] = sum;
      sum = 0;
    }
  }
  tally.Add(BeatLoopCycles(cols_padded));
}

// One pass of the Hadamard unit over m vectors of n values: butterfly stages [stage, stage +
// stages) of each (len = 2^stage, ..., stages <= kPassStages), src to dst (either may be the
// on-chip block or memory), the results times `scale`. The values a pass's stages combine form
// groups of 2^stages (spaced len apart) that it holds in registers, a beat (16 values) per
// cycle; each butterfly is runtime/common/hadamard.h's, in its stage's turn.
constexpr int kPassStages = kHadamardPassStages;
constexpr int kPassValues = 1 << kPassStages;             // a group of the deepest pass
constexpr int kGroupsPerBeatMax = kElementLanes / 2;      // groups of 2 (a one-stage pass)
void HadamardPass(const float* src, float* dst, int n, int m, int stage, int stages, float scale,
                  CycleTally& tally) {
  const int len = 1 << stage, group = 1 << stages;
  const int groups_per_vector = n / group, groups = m * groups_per_vector;
  const int groups_per_beat = kElementLanes / group;
  for (int g0 = 0; g0 < groups; g0 += groups_per_beat) {
#pragma HLS PIPELINE II = 1
    for (int u = 0; u < kGroupsPerBeatMax; ++u) {
#pragma HLS UNROLL
      if (u >= groups_per_beat || g0 + u >= groups) continue;
      const int g = g0 + u, r = g % groups_per_vector;
      const int first = g / groups_per_vector * n + r / len * len * group + r % len;
      float x[kPassValues];
#pragma HLS ARRAY_PARTITION variable = x complete
      for (int k = 0; k < kPassValues; ++k) {
#pragma HLS UNROLL
        if (k < group) x[k] = src[first + k * len];
      }
      for (int s = 0; s < kPassStages; ++s) {
#pragma HLS UNROLL
        for (int k = 0; k < kPassValues; ++k) {
#pragma HLS UNROLL
          if (s < stages && k < group && (k >> s & 1) == 0) {
            const float a = x[k], b = x[k + (1 << s)];
            x[k] = a + b;
            x[k + (1 << s)] = a - b;
          }
        }
      }
      for (int k = 0; k < kPassValues; ++k) {
#pragma HLS UNROLL
        if (k < group) dst[first + k * len] = scale == 1.0f ? x[k] : x[k] * scale;
      }
    }
  }
  tally.Add(BeatLoopCycles(int64_t{m} * n));
}

}  // namespace
}  // namespace accllm::hls

using accllm::hls::BeatLoopCycles;
using accllm::hls::CycleTally;
using accllm::hls::CycleUnit;
using accllm::hls::kElementLanes;

extern "C" void accllm_rmsnorm_a8(const float* x, const float* weight, int size, float eps, int cols_padded,
                                  int group_size, int8_t* codes, float* act_scale, int32_t* group_sums) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = weight offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = codes offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = act_scale offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = group_sums offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  using accllm::kNormLanes;
  using accllm::hls::kDivideLatency;
  using accllm::hls::kFaddLatency;
  using accllm::hls::kLoopDepth;
  using accllm::hls::kMaxDim;
  CycleTally tally;
  // The sum of squares in lane_sum.h's order (SquareSum): 64 partial sums, each chunk of 64
  // squares in the interval of one add (a beat per cycle), the halving tree, the tail in order.
  float lane[kNormLanes];
#pragma HLS ARRAY_PARTITION variable = lane complete
  for (int l = 0; l < kNormLanes; ++l) lane[l] = 0.0f;
  const int n64 = size / kNormLanes * kNormLanes;
  for (int i = 0; i < n64; i += kNormLanes) {
#pragma HLS PIPELINE II = 4
    for (int l = 0; l < kNormLanes; ++l) {
#pragma HLS UNROLL
      lane[l] += x[i + l] * x[i + l];
    }
  }
  tally.Add(static_cast<int64_t>(n64 / kNormLanes) * kFaddLatency + kLoopDepth);
  for (int width = kNormLanes / 2; width >= 1; width /= 2) {
#pragma HLS UNROLL
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
    tally.Add(kFaddLatency);
  }
  float ss = lane[0];
  for (int i = n64; i < size; ++i) ss += x[i] * x[i];
  tally.Add(static_cast<int64_t>(size - n64) * kFaddLatency);
  ss /= size;
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  tally.Add(3 * kDivideLatency);
  float normalized[kMaxDim];
#pragma HLS ARRAY_PARTITION variable = normalized cyclic factor = 16
  float amax = 0.0f;  // a maximum: the same in any order
  for (int j0 = 0; j0 < size; j0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
    for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
      const int j = j0 + l;
      if (j < size) {
        normalized[j] = weight[j] * (ss * x[j]);
        amax = std::fmax(amax, std::fabs(normalized[j]));
      }
    }
  }
  tally.Add(BeatLoopCycles(size));
  accllm::hls::QuantizeA8(normalized, amax, size, cols_padded, group_size, codes, act_scale, group_sums, tally);
  tally.Commit(CycleUnit::kElementwise);
}

extern "C" void accllm_a8(const float* x, int size, int cols_padded, int group_size, int8_t* codes, float* act_scale,
                          int32_t* group_sums) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = codes offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = act_scale offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = group_sums offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  using accllm::hls::kMaxDim;
  CycleTally tally;
  float staged[kMaxDim];
#pragma HLS ARRAY_PARTITION variable = staged cyclic factor = 16
  float amax = 0.0f;
  for (int j0 = 0; j0 < size; j0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
    for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
      const int j = j0 + l;
      if (j < size) {
        staged[j] = x[j];
        amax = std::fmax(amax, std::fabs(staged[j]));
      }
    }
  }
  tally.Add(BeatLoopCycles(size));
  accllm::hls::QuantizeA8(staged, amax, size, cols_padded, group_size, codes, act_scale, group_sums, tally);
  tally.Commit(CycleUnit::kElementwise);
}

extern "C" void accllm_rope(float* vec, int n, int head_size, int pos, float theta) {
#pragma HLS INTERFACE m_axi port = vec offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  CycleTally tally;
  for (int i0 = 0; i0 < n; i0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
    for (int p = 0; p < kElementLanes; p += 2) {
#pragma HLS UNROLL
      const int i = i0 + p;
      if (i < n) {
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
  }
  tally.Add(BeatLoopCycles(n));
  tally.Commit(CycleUnit::kElementwise);
}

extern "C" void accllm_swiglu(float* gate, const float* up, int size) {
#pragma HLS INTERFACE m_axi port = gate offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = up offset = slave bundle = gmem1
#pragma HLS INTERFACE s_axilite port = return
  CycleTally tally;
  for (int i0 = 0; i0 < size; i0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
    for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
      const int i = i0 + l;
      if (i < size) {
        float val = gate[i];
        val *= 1.0f / (1.0f + accllm::Exp(-val));
        gate[i] = val * up[i];
      }
    }
  }
  tally.Add(BeatLoopCycles(size));
  tally.Commit(CycleUnit::kElementwise);
}

extern "C" void accllm_hadamard(float* vectors, int n, int count) {
#pragma HLS INTERFACE m_axi port = vectors offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  using accllm::hls::kHadamardBlock;
  using accllm::hls::kPassStages;
  CycleTally tally;
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  int log2n = 0;
  while ((1 << log2n) < n) ++log2n;
  // Up to kHadamardBlock vectors at a time, in passes of up to kPassStages butterfly stages: the
  // first reads the block from memory, the last writes it back normalized.
  for (int v0 = 0; v0 < count; v0 += kHadamardBlock) {
    const int m = count - v0 < kHadamardBlock ? count - v0 : kHadamardBlock;
    float* block = vectors + static_cast<int64_t>(v0) * n;
    float x[kHadamardBlock * 256];
#pragma HLS ARRAY_PARTITION variable = x cyclic factor = 16
    for (int stage = 0; stage < log2n; stage += kPassStages) {
      const int stages = log2n - stage < kPassStages ? log2n - stage : kPassStages;
      const bool last = stage + stages == log2n;
      accllm::hls::HadamardPass(stage == 0 ? block : x, last ? block : x, n, m, stage, stages, last ? scale : 1.0f,
                                tally);
    }
  }
  tally.Commit(CycleUnit::kElementwise);
}
