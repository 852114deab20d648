#include "fpga/kernels/kv4_attention.h"

#include <cmath>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/hls_compat.h"
#include "runtime/common/exp.h"
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

// Up to kAttentionQueryLanes (token, head) queries end to end, their steps interleaved: each
// pipelined loop below runs key-major with the lanes innermost, so a sum one lane carries from key
// to key is next touched Q cycles later (Q >= the add's latency) and every loop issues one (query,
// key) per cycle. Each lane keeps its own order, the one the CPU kernels use, so the results are
// theirs bit for bit. Cycles (cycle_count.h): the queries and their sums, Q per beat of 16 values
// (and the sums' tree); the lanes' run counts, one per cycle; each key pass (scores, exponentials,
// values), Q per key of the longest lane, plus a cycle per page run where a pass reads keys; the
// outputs, Q per beat.
template <int kHeadSize>
void AttendGroup(const float* q, const float* q_sink, const int32_t* item_runs, const int32_t* item_sink_runs,
                 int lanes, const KvChannels& kv, const int32_t* run_start, const int32_t* run_count, float* out) {
  constexpr int Q = kAttentionQueryLanes;
  CycleTally tally;
  float query[Q][kHeadSize], sink_query[Q][kHeadSize], acc[Q][kHeadSize];
#pragma HLS ARRAY_PARTITION variable = query complete dim = 2
#pragma HLS ARRAY_PARTITION variable = sink_query complete dim = 2
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 2
  ACCLLM_CSIM_THREAD_LOCAL float scores[Q][kKv4MaxVisible];
#pragma HLS ARRAY_PARTITION variable = scores complete dim = 1
  float q_sum[Q], sink_sum[Q], max_score[Q], sum[Q], min_sum[Q], run_min[Q];
  int visible[Q], sink_visible[Q];
#pragma HLS ARRAY_PARTITION variable = q_sum complete
#pragma HLS ARRAY_PARTITION variable = sink_sum complete
#pragma HLS ARRAY_PARTITION variable = max_score complete
#pragma HLS ARRAY_PARTITION variable = sum complete
#pragma HLS ARRAY_PARTITION variable = min_sum complete
#pragma HLS ARRAY_PARTITION variable = run_min complete
#pragma HLS ARRAY_PARTITION variable = visible complete
#pragma HLS ARRAY_PARTITION variable = sink_visible complete
  for (int l = 0; l < Q; ++l) {
#pragma HLS UNROLL
    q_sum[l] = sink_sum[l] = max_score[l] = sum[l] = min_sum[l] = run_min[l] = 0.0f;
    visible[l] = sink_visible[l] = 0;
  }
  // The queries a beat (16 values) per cycle, lane by lane, and their sums in lane_sum.h's order:
  // a beat adds two values into each of a lane's 8 partial sums, which that lane touches again Q
  // cycles later (Q >= two adds' latency).
  static_assert(kHeadSize % kSumLanes == 0, "a query's sum has no tail");
  constexpr int kBeats = (kHeadSize + kElementLanes - 1) / kElementLanes;
  float q_part[Q][kSumLanes], sink_part[Q][kSumLanes];
#pragma HLS ARRAY_PARTITION variable = q_part complete dim = 0
#pragma HLS ARRAY_PARTITION variable = sink_part complete dim = 0
  for (int l = 0; l < Q; ++l) {
#pragma HLS UNROLL
    for (int j = 0; j < kSumLanes; ++j) {
#pragma HLS UNROLL
      q_part[l][j] = sink_part[l][j] = 0.0f;
    }
  }
  for (int b = 0; b < kBeats; ++b) {
    for (int l = 0; l < Q; ++l) {
#pragma HLS PIPELINE II = 1
      const bool live = l < lanes, sinks = live && item_sink_runs[l] > 0;
      for (int j = 0; j < kElementLanes; ++j) {
#pragma HLS UNROLL
        const int d = b * kElementLanes + j;
        if (d < kHeadSize) {
          query[l][d] = live ? q[static_cast<int64_t>(l) * kHeadSize + d] : 0.0f;
          sink_query[l][d] = sinks ? q_sink[static_cast<int64_t>(l) * kHeadSize + d] : 0.0f;
          acc[l][d] = 0.0f;
          q_part[l][d % kSumLanes] += query[l][d];
          sink_part[l][d % kSumLanes] += sink_query[l][d];
        }
      }
    }
  }
  for (int l = 0; l < Q; ++l) {
#pragma HLS UNROLL
    q_sum[l] = CombineLanes(q_part[l]);
    sink_sum[l] = CombineLanes(sink_part[l]);
  }
  tally.Add(Q * kBeats + kLoopDepth + kQuerySumTreeCycles);
  int longest = 0, runs = 0;
  for (int l = 0; l < lanes; ++l) {
    for (int r = item_runs[l]; r < item_runs[l + 1]; ++r) {
      visible[l] += run_count[r];
      if (r - item_runs[l] < item_sink_runs[l]) sink_visible[l] += run_count[r];
    }
    longest = visible[l] > longest ? visible[l] : longest;
    runs += item_runs[l + 1] - item_runs[l];
  }
  tally.Add(runs + kLoopDepth);  // a run's count per cycle

  // Each lane walks its runs in order: `run` and `offset` name its next key.
  int run[Q], offset[Q];
#pragma HLS ARRAY_PARTITION variable = run complete
#pragma HLS ARRAY_PARTITION variable = offset complete
  const auto rewind = [&] {
    for (int l = 0; l < Q; ++l) {
#pragma HLS UNROLL
      run[l] = l < lanes ? item_runs[l] : 0;
      offset[l] = 0;
    }
  };
  const auto next_vector = [&](int l) {
    const int64_t v = static_cast<int64_t>(run_start[run[l]]) + offset[l];
    if (++offset[l] == run_count[run[l]]) {
      ++run[l];
      offset[l] = 0;
    }
    return v;
  };
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadSize));
  rewind();
  for (int i = 0; i < longest; ++i) {
    for (int l = 0; l < Q; ++l) {
#pragma HLS PIPELINE II = 1
      if (l >= lanes || i >= visible[l]) continue;
      const int64_t v = next_vector(l);
      const uint8_t* c = kv.Vector<const uint8_t>(0, kHeadSize, v);
      const Kv4Param& key = *kv.Vector<const Kv4Param>(1, kHeadSize, v);
      const bool sink = i < sink_visible[l];
      // Eight lanes and the fixed tree of lane_sum.h: the CPU paths' order.
      const float dot = sink ? LaneDotN<kHeadSize>([&](int d) { return sink_query[l][d]; }, [&](int d) { return Code(c, d); })
                             : LaneDotN<kHeadSize>([&](int d) { return query[l][d]; }, [&](int d) { return Code(c, d); });
      const float s = scale * (HalfToFloat(key.scale) * dot + HalfToFloat(key.min) * (sink ? sink_sum[l] : q_sum[l]));
      scores[l][i] = s;
      max_score[l] = i == 0 ? s : std::fmax(max_score[l], s);
    }
  }
  tally.Add(static_cast<int64_t>(Q) * longest + runs + kLoopDepth);
  // Softmax (the element-wise unit's order: max, exp and sum, divide).
  for (int i = 0; i < longest; ++i) {
    for (int l = 0; l < Q; ++l) {
#pragma HLS PIPELINE II = 1
      if (l >= lanes || i >= visible[l]) continue;
      scores[l][i] = Exp(scores[l][i] - max_score[l]);
      sum[l] += scores[l][i];
    }
  }
  tally.Add(static_cast<int64_t>(Q) * longest + kLoopDepth);
  rewind();
  for (int i = 0; i < longest; ++i) {
    for (int l = 0; l < Q; ++l) {
#pragma HLS PIPELINE II = 1
      if (l >= lanes || i >= visible[l]) continue;
      const bool run_ends = offset[l] + 1 == run_count[run[l]];
      const int64_t v = next_vector(l);
      const uint8_t* c = kv.Vector<const uint8_t>(2, kHeadSize, v);
      const Kv4Param& value = *kv.Vector<const Kv4Param>(3, kHeadSize, v);
      const float p = scores[l][i] / sum[l];
      const float ps = p * HalfToFloat(value.scale);
      for (int d = 0; d < kHeadSize; ++d) {
#pragma HLS UNROLL
        acc[l][d] = std::fma(ps, Code(c, d), acc[l][d]);
      }
      // Per run, then into the lane's total: the CPU kernels' order (one accumulate call per run).
      run_min[l] += p * HalfToFloat(value.min);
      if (run_ends) {
        min_sum[l] += run_min[l];
        run_min[l] = 0.0f;
      }
    }
  }
  tally.Add(static_cast<int64_t>(Q) * longest + runs + kLoopDepth);
  for (int b = 0; b < kBeats; ++b) {
    for (int l = 0; l < Q; ++l) {
#pragma HLS PIPELINE II = 1
      for (int j = 0; j < kElementLanes; ++j) {
#pragma HLS UNROLL
        const int d = b * kElementLanes + j;
        if (l < lanes && d < kHeadSize) {
          out[static_cast<int64_t>(l) * kHeadSize + d] = min_sum[l] != 0.0f ? acc[l][d] + min_sum[l] : acc[l][d];
        }
      }
    }
  }
  tally.Add(Q * kBeats + kLoopDepth);
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

void Kv4Attention(const float* q, const float* q_sink, const int32_t* item_runs, const int32_t* item_sink_runs,
                  int items, const KvChannels& kv, const int32_t* run_start, const int32_t* run_count, int head_size,
                  float* out) {
  // Queries in groups of kAttentionQueryLanes, interleaved within a group.
  for (int i = 0; i < items; i += kAttentionQueryLanes) {
    const int lanes = items - i < kAttentionQueryLanes ? items - i : kAttentionQueryLanes;
    WithHeadSize(head_size, [&]<int N>() {
      AttendGroup<N>(q + static_cast<int64_t>(i) * N, q_sink + static_cast<int64_t>(i) * N, item_runs + i,
                     item_sink_runs + i, lanes, kv, run_start, run_count, out + static_cast<int64_t>(i) * N);
    });
  }
}

AttentionShare AttentionShareOf(int items, int units, int place) {
  const int64_t groups = (items + kAttentionQueryLanes - 1) / kAttentionQueryLanes;
  const int64_t first = groups * place / units, last = groups * (place + 1) / units;
  const int64_t begin = first * kAttentionQueryLanes, end = last * kAttentionQueryLanes;
  return {static_cast<int>(begin), static_cast<int>(end < items ? end : items)};
}

bool ServeAttentionCommand(const AttentionUnitPorts& ports, CommandStream& in, CommandStream& out, TokenStream& done_in,
                           TokenStream& done_out) {
  return ServeChainCommand(in, out, done_in, done_out, [&](const StepDescriptor& d, int place) {
    const int hs = d.n[1], items = d.tokens * d.n[0];
    const AttentionShare share = AttentionShareOf(items, d.n[5], place);
    if (share.end <= share.begin) return;
    const SharedPorts& shared = ports.shared;
    const KvChannels kv = KvChannelsAt(shared, ports.kv, d.p[7], d.n[4]);
    const int64_t first = share.begin;
    Kv4Attention(shared.At<const float>(d.p[11]) + first * hs, shared.At<const float>(d.p[12]) + first * hs,
                 shared.At<const int32_t>(d.p[3]) + first, shared.At<const int32_t>(d.p[4]) + first,
                 share.end - share.begin, kv, shared.At<const int32_t>(d.p[5]), shared.At<const int32_t>(d.p[6]), hs,
                 shared.At<float>(d.p[13]) + first * hs);
  });
}

}  // namespace accllm::hls


extern "C" void accllm_kv4_attention(const float* shared_floats, const int32_t* shared_ints,
                                     const uint64_t* shared_words, uint64_t shared_base, uint8_t* kv0, uint8_t* kv1,
                                     uint8_t* kv2, uint8_t* kv3, accllm::hls::CommandStream& commands_in,
                                     accllm::hls::CommandStream& commands_out, accllm::hls::TokenStream& done_in,
                                     accllm::hls::TokenStream& done_out) {
// The shared channels (queries, runs, outputs, the KV channel table) and one master per KV
// pseudo-channel (HBM 28-31). Started once; returns at a stop command.
#pragma HLS INTERFACE m_axi port = shared_floats offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = shared_ints offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = shared_words offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = kv0 offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = kv1 offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = kv2 offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = kv3 offset = slave bundle = gmem4
#pragma HLS INTERFACE axis port = commands_in
#pragma HLS INTERFACE axis port = commands_out
#pragma HLS INTERFACE axis port = done_in
#pragma HLS INTERFACE axis port = done_out
#pragma HLS INTERFACE s_axilite port = return
  using namespace accllm::hls;
  AttentionUnitPorts ports;
  ports.shared.f32 = {const_cast<float*>(shared_floats), shared_base};
  ports.shared.i32 = {const_cast<int32_t*>(shared_ints), shared_base};
  ports.shared.u64 = {const_cast<uint64_t*>(shared_words), shared_base};
  uint8_t* const kv[kKvChannels] = {kv0, kv1, kv2, kv3};
  for (int c = 0; c < kKvChannels; ++c) ports.kv[c] = kv[c];
  while (ServeAttentionCommand(ports, commands_in, commands_out, done_in, done_out)) {
  }
}
