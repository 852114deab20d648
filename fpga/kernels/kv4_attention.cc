#include "fpga/kernels/kv4_attention.h"

#include <cmath>

#include "fpga/kernels/hls_compat.h"
#include "runtime/common/lane_sum.h"

namespace accllm::hls {
namespace {

// The d-th 4-bit code of a KV4 vector (low nibble first), as a float.
float Code(const uint8_t* codes, int d) { return static_cast<float>((codes[d / 2] >> (4 * (d & 1))) & 15); }

}  // namespace

void Kv4Score(const float* q, float q_sum, const uint8_t* codes, const Kv4Param* params, int count, int head_size,
              float scale, float* scores) {
  for (int i = 0; i < count; ++i) {
#pragma HLS PIPELINE II = 1
    const uint8_t* c = codes + static_cast<int64_t>(i) * (head_size / 2);
    // Eight lanes and the fixed tree of lane_sum.h: the CPU paths' order.
    const float dot = LaneDot([&](int d) { return q[d]; }, [&](int d) { return Code(c, d); }, head_size);
    scores[i] = scale * (HalfToFloat(params[i].scale) * dot + HalfToFloat(params[i].min) * q_sum);
  }
}

float Kv4Accumulate(float* out, const float* p, const uint8_t* codes, const Kv4Param* params, int count,
                    int head_size) {
  float min_sum = 0.0f;
  for (int i = 0; i < count; ++i) {
#pragma HLS PIPELINE II = 1
    const uint8_t* c = codes + static_cast<int64_t>(i) * (head_size / 2);
    const float ps = p[i] * HalfToFloat(params[i].scale);
    for (int d = 0; d < head_size; ++d) {
#pragma HLS UNROLL
      out[d] = std::fma(ps, Code(c, d), out[d]);
    }
    min_sum += p[i] * HalfToFloat(params[i].min);
  }
  return min_sum;
}

// One (token, head) query end to end: scores over its runs, softmax, weighted sum of values.
void AttendOneHead(const float* q, const float* q_sink, int sink_runs, const uint8_t* key_codes,
                   const Kv4Param* key_params, const uint8_t* value_codes, const Kv4Param* value_params,
                   const int32_t* run_start, const int32_t* run_count, int runs, int head_size, float* out) {
  float query[kKv4MaxHeadSize], sink_query[kKv4MaxHeadSize];
  float q_sum = 0.0f, sink_sum = 0.0f;
  for (int d = 0; d < head_size; ++d) {
    query[d] = q[d];
    q_sum += q[d];
    sink_query[d] = sink_runs > 0 ? q_sink[d] : 0.0f;
    sink_sum += sink_query[d];
  }
  float scores[kKv4MaxVisible];
  int visible = 0;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_size));
  for (int r = 0; r < runs; ++r) {
    const int64_t start = run_start[r];
    const bool sink = r < sink_runs;
    Kv4Score(sink ? sink_query : query, sink ? sink_sum : q_sum, key_codes + start * (head_size / 2),
             key_params + start, run_count[r], head_size, scale, scores + visible);
    visible += run_count[r];
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
  float acc[kKv4MaxHeadSize] = {};
  float min_sum = 0.0f;
  visible = 0;
  for (int r = 0; r < runs; ++r) {
    const int64_t start = run_start[r];
    min_sum += Kv4Accumulate(acc, scores + visible, value_codes + start * (head_size / 2), value_params + start,
                             run_count[r], head_size);
    visible += run_count[r];
  }
  for (int d = 0; d < head_size; ++d) out[d] = min_sum != 0.0f ? acc[d] + min_sum : acc[d];
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
    accllm::hls::AttendOneHead(q + static_cast<int64_t>(i) * head_size, q_sink + static_cast<int64_t>(i) * head_size,
                               item_sink_runs[i], key_codes, key_params, value_codes, value_params, run_start + first,
                               run_count + first, item_runs[i + 1] - first, head_size,
                               out + static_cast<int64_t>(i) * head_size);
  }
}
