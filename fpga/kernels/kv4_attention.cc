#include "fpga/kernels/kv4_attention.h"

#include <cmath>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/hls_compat.h"
#include "runtime/common/lane_sum.h"

namespace accllm::hls {
namespace {

// The d-th 4-bit code of a KV4 vector (low nibble first), as a float.
float Code(const uint8_t* codes, int d) { return static_cast<float>((codes[d / 2] >> (4 * (d & 1))) & 15); }

// The units are built per head size (fixed trip counts for HLS): one instance each.
template <int kHeadSize>
void ScoreUnit(const float* q, float q_sum, const uint8_t* codes, const Kv4Param* params, int count, float scale,
               float* scores) {
  for (int i = 0; i < count; ++i) {
#pragma HLS PIPELINE II = 1
    const uint8_t* c = codes + static_cast<int64_t>(i) * (kHeadSize / 2);
    // Eight lanes and the fixed tree of lane_sum.h: the CPU paths' order.
    const float dot = LaneDotN<kHeadSize>([&](int d) { return q[d]; }, [&](int d) { return Code(c, d); });
    scores[i] = scale * (HalfToFloat(params[i].scale) * dot + HalfToFloat(params[i].min) * q_sum);
  }
}

template <int kHeadSize>
float AccumulateUnit(float* out, const float* p, const uint8_t* codes, const Kv4Param* params, int count) {
  float min_sum = 0.0f;
  for (int i = 0; i < count; ++i) {
#pragma HLS PIPELINE II = 1
    const uint8_t* c = codes + static_cast<int64_t>(i) * (kHeadSize / 2);
    const float ps = p[i] * HalfToFloat(params[i].scale);
    for (int d = 0; d < kHeadSize; ++d) {
#pragma HLS UNROLL
      out[d] = std::fma(ps, Code(c, d), out[d]);
    }
    min_sum += p[i] * HalfToFloat(params[i].min);
  }
  return min_sum;
}

// One (token, head) query end to end: scores over its runs, softmax, weighted sum of values.
template <int kHeadSize>
void AttendOneHead(const float* q, const float* q_sink, int sink_runs, const uint8_t* key_codes,
                   const Kv4Param* key_params, const uint8_t* value_codes, const Kv4Param* value_params,
                   const int32_t* run_start, const int32_t* run_count, int runs, float* out) {
  float query[kHeadSize], sink_query[kHeadSize], acc[kHeadSize];
#pragma HLS ARRAY_PARTITION variable = query complete
#pragma HLS ARRAY_PARTITION variable = sink_query complete
#pragma HLS ARRAY_PARTITION variable = acc complete
  // Cycles, loop by loop: the query and its sums (an add carried per element), each run's keys (a
  // codes beat and a params read on one master: two cycles a key), the softmax's three passes (the
  // sum carried), each run's values (the accumulators' fma carried from key to key), the output.
  CycleTally tally;
  tally.Add(kHeadSize * kFaddLatency + kLoopDepth);
  float q_sum = 0.0f, sink_sum = 0.0f;
  for (int d = 0; d < kHeadSize; ++d) {
    query[d] = q[d];
    q_sum += q[d];
    sink_query[d] = sink_runs > 0 ? q_sink[d] : 0.0f;
    sink_sum += sink_query[d];
    acc[d] = 0.0f;
  }
  float scores[kKv4MaxVisible];
  int visible = 0;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadSize));
  for (int r = 0; r < runs; ++r) {
    const int64_t start = run_start[r];
    const bool sink = r < sink_runs;
    ScoreUnit<kHeadSize>(sink ? sink_query : query, sink ? sink_sum : q_sum, key_codes + start * (kHeadSize / 2),
                         key_params + start, run_count[r], scale, scores + visible);
    visible += run_count[r];
    tally.Add(2 * run_count[r] + kLoopDepth);
  }
  // Softmax (the element-wise unit's order: max, exp and sum, divide).
  float max_score = scores[0];
  for (int i = 1; i < visible; ++i) max_score = std::fmax(max_score, scores[i]);
  float sum = 0.0f;
  for (int i = 0; i < visible; ++i) {
    scores[i] = std::exp(scores[i] - max_score);
    sum += scores[i];
  }
  for (int i = 0; i < visible; ++i) scores[i] /= sum;
  tally.Add(visible * (2 + kFaddLatency) + 3 * kLoopDepth);
  float min_sum = 0.0f;
  visible = 0;
  for (int r = 0; r < runs; ++r) {
    const int64_t start = run_start[r];
    min_sum += AccumulateUnit<kHeadSize>(acc, scores + visible, value_codes + start * (kHeadSize / 2),
                                         value_params + start, run_count[r]);
    visible += run_count[r];
    tally.Add(kFmaLatency * run_count[r] + kLoopDepth);
  }
  for (int d = 0; d < kHeadSize; ++d) out[d] = min_sum != 0.0f ? acc[d] + min_sum : acc[d];
  tally.Add(kHeadSize + kLoopDepth);
  tally.Commit(CycleUnit::kAttention);
}

// Runs f.template operator()<N>() for the unit instance of `head_size`; false when there is none.
template <typename F>
bool WithHeadSize(int head_size, F&& f) {
  switch (head_size) {
    case 8: f.template operator()<8>(); return true;
    case 16: f.template operator()<16>(); return true;
    case 32: f.template operator()<32>(); return true;
    case 48: f.template operator()<48>(); return true;
    case 64: f.template operator()<64>(); return true;
    case 96: f.template operator()<96>(); return true;
    case 128: f.template operator()<128>(); return true;
    case 256: f.template operator()<256>(); return true;
  }
  return false;
}
static_assert(sizeof(kKv4HeadSizes) / sizeof(kKv4HeadSizes[0]) == 8, "WithHeadSize lists every size in kKv4HeadSizes");

}  // namespace

void Kv4Score(const float* q, float q_sum, const uint8_t* codes, const Kv4Param* params, int count, int head_size,
              float scale, float* scores) {
  if (!WithHeadSize(head_size, [&]<int N>() { ScoreUnit<N>(q, q_sum, codes, params, count, scale, scores); })) {
    __builtin_trap();  // the host checks the head size first (fpga/device_limits.h)
  }
}

float Kv4Accumulate(float* out, const float* p, const uint8_t* codes, const Kv4Param* params, int count,
                    int head_size) {
  float min_sum = 0.0f;
  if (!WithHeadSize(head_size, [&]<int N>() { min_sum = AccumulateUnit<N>(out, p, codes, params, count); })) {
    __builtin_trap();
  }
  return min_sum;
}

}  // namespace accllm::hls

extern "C" void accllm_kv4_attention(const float* q, const float* q_sink, const int32_t* item_runs,
                                     const int32_t* item_sink_runs, int items, const uint8_t* key_codes,
                                     const accllm::hls::Kv4Param* key_params, const uint8_t* value_codes,
                                     const accllm::hls::Kv4Param* value_params, const int32_t* run_start,
                                     const int32_t* run_count, int head_size, float* out) {
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = q_sink offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = item_runs offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = item_sink_runs offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = key_codes offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = key_params offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = value_codes offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = value_params offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = run_start offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = run_count offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = out offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  for (int i = 0; i < items; ++i) {
    const int first = item_runs[i];
    accllm::hls::WithHeadSize(head_size, [&]<int N>() {
      accllm::hls::AttendOneHead<N>(q + static_cast<int64_t>(i) * N, q_sink + static_cast<int64_t>(i) * N,
                                    item_sink_runs[i], key_codes, key_params, value_codes, value_params,
                                    run_start + first, run_count + first, item_runs[i + 1] - first,
                                    out + static_cast<int64_t>(i) * N);
    });
  }
}
