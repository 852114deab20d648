// KV4 attention units: the score unit (q against a run of 4-bit keys) and the accumulate unit
// (probabilities times a run of 4-bit values), over cached vectors laid out as the KV4 pages
// are (runtime/kv/kv_storage.h: head_size / 2 code bytes per vector, low nibble first, and fp16
// scale and min per vector). The host walks a sequence's block table and hands the units the
// page runs that lie in the Λ window (sinks + recent tokens), so the mask costs nothing here.
// The top function runs groups of kAttentionQueryLanes (token, head) queries end to end, their
// steps interleaved one (query, key) per cycle: scores, softmax, weighted sum.
#pragma once

#include <cstdint>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/device_memory.h"
#include "fpga/kernels/kv_channels.h"
#include "fpga/kernels/unit_chain.h"

namespace accllm::hls {

struct Kv4Param {
  uint16_t scale;  // fp16
  uint16_t min;    // fp16
};

// The units for a head size in kKv4HeadSizes (any other traps: the host checks first).
// scores[i] = scale * (s_i * (q . codes_i) + min_i * q_sum)
void Kv4Score(const float* q, float q_sum, const uint8_t* codes, const Kv4Param* params, int count, int head_size,
              float scale, float* scores);
// out += sum_i p_i * s_i * codes_i; returns sum_i p_i * min_i (added to every element later).
float Kv4Accumulate(float* out, const float* p, const uint8_t* codes, const Kv4Param* params, int count,
                    int head_size);

inline constexpr int kKv4MaxHeadSize = 256;
// The head sizes the units are built for (each one a separate instance in hardware).
inline constexpr int kKv4HeadSizes[] = {8, 16, 32, 48, 64, 96, 128, 256};
constexpr bool Kv4HeadSizeSupported(int head_size) {
  for (int n : kKv4HeadSizes) {
    if (n == head_size) return true;
  }
  return false;
}
inline constexpr int kKv4MaxVisible = 8192;  // sinks + window tokens one query may see
// Queries one attention unit interleaves: at least the latency of an add carried per query (two,
// where a beat adds two values into each partial sum of a query's sum).
inline constexpr int kAttentionQueryLanes = 8;
static_assert(kAttentionQueryLanes >= 2 * kFaddLatency, "a query's partial sums take two adds a beat");
// The tree that combines a query's 8 partial sums (lane_sum.h): three adds deep.
inline constexpr int kQuerySumTreeCycles = 3 * kFaddLatency;

// One layer's attention for a batch of (token, head) queries (runtime/kv/attention_batch.h):
// item i reads its query from q[i] (and q_sink[i]), owns runs [item_runs[i], item_runs[i + 1]),
// the first item_sink_runs[i] of which are sink tokens outside the window that meet q_sink (the
// query rotated at the capped position, LM-Infinite style); the rest meet q. Run r covers
// run_count[r] vectors starting at vector kv.first_vector + run_start[r] of the KV cache, striped
// over the four KV channels (kv_channels.h). Writes head_size outputs per item.
void Kv4Attention(const float* q, const float* q_sink, const int32_t* item_runs, const int32_t* item_sink_runs,
                  int items, const KvChannels& kv, const int32_t* run_start, const int32_t* run_count, int head_size,
                  float* out);

// An attention unit as the card runs it: started once, it serves the kAttention commands of its
// chain (unit_chain.h) until a stop, unit u of n over query groups [G u / n, G (u + 1) / n) of the
// layer's G groups of kAttentionQueryLanes (token, head) items.
struct AttentionUnitPorts {
  SharedPorts shared;                  // queries, runs, outputs, the KV channel table
  uint8_t* kv[kKvChannels] = {};       // each KV channel's buffer
};
struct AttentionShare {
  int begin = 0, end = 0;  // items
};
AttentionShare AttentionShareOf(int items, int units, int place);
bool ServeAttentionCommand(const AttentionUnitPorts& ports, CommandStream& in, CommandStream& out, TokenStream& done_in,
                           TokenStream& done_out);

}  // namespace accllm::hls


// The unit's top function: shared masters set to one buffer in the shared channels (shared_base),
// kv0..kv3 to the KV channels' buffers; streams last.
extern "C" void accllm_kv4_attention(const float* shared_floats, const int32_t* shared_ints,
                                     const uint64_t* shared_words, uint64_t shared_base, uint8_t* kv0, uint8_t* kv1,
                                     uint8_t* kv2, uint8_t* kv3, accllm::hls::CommandStream& commands_in,
                                     accllm::hls::CommandStream& commands_out, accllm::hls::TokenStream& done_in,
                                     accllm::hls::TokenStream& done_out);
