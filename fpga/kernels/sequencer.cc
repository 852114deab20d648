#include "fpga/kernels/sequencer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/elementwise.h"
#include "fpga/kernels/hls_compat.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/w2a8_unit.h"
#include "runtime/common/lane_sum.h"
#include "runtime/common/nn_ops.h"

namespace accllm::hls {
namespace {

#ifndef ACCLLM_VITIS_HLS
std::atomic<int64_t> sequencer_starts{0};
#endif

// One unit of a chain serving one command. On a card the units are kernels of their own and
// nothing runs them here; in C simulation the sequencer runs them (unit_chain.h's RunOnChain).
#ifdef ACCLLM_VITIS_HLS
void W2A8UnitInCSim(CommandStream&, CommandStream&, TokenStream&, TokenStream&) {}
void AttentionUnitInCSim(CommandStream&, CommandStream&, TokenStream&, TokenStream&) {}
#else
void W2A8UnitInCSim(CommandStream& in, CommandStream& out, TokenStream& done_in, TokenStream& done_out) {
  ServeW2A8Command(W2A8UnitPorts{}, in, out, done_in, done_out);
}
void AttentionUnitInCSim(CommandStream& in, CommandStream& out, TokenStream& done_in, TokenStream& done_out) {
  ServeAttentionCommand(AttentionUnitPorts{}, in, out, done_in, done_out);
}
#endif

// What the sequencer reaches: buffers through its masters, and the two unit chains.
struct Card {
  SharedPorts shared;
  uint8_t* kv[kKvChannels] = {};
  ChainEnds w2a8, attention;

  template <typename T>
  T* At(uint64_t address) const {
    return shared.At<T>(address);
  }
};

// A pipelined loop over n elements, a beat of kElementLanes per cycle.
int64_t BeatLoopCycles(int64_t n) { return (n + kElementLanes - 1) / kElementLanes + kLoopDepth; }

// dst[0, n) = src[0, n), a beat per cycle (src == dst: a row that stays).
void CopyBeats(float* dst, const float* src, int n, CycleTally& tally) {
  for (int i0 = 0; i0 < n; i0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
    for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
      if (i0 + l < n) dst[i0 + l] = src[i0 + l];
    }
  }
  tally.Add(BeatLoopCycles(n));
}

void Embed(const StepDescriptor& d, const Card& card) {
  const int dim = d.n[0];
  const uint16_t* table = card.At<const uint16_t>(d.p[0]);
  const int32_t* tokens = card.At<const int32_t>(d.p[1]);
  float* x = card.At<float>(d.p[2]);
  CycleTally tally;
  for (int t = 0; t < d.tokens; ++t) {
    const uint16_t* row = table + static_cast<int64_t>(tokens[t]) * dim;
    for (int j0 = 0; j0 < dim; j0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
      for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
        const int j = j0 + l;
        if (j < dim) x[static_cast<int64_t>(t) * dim + j] = HalfToFloat(row[j]);
      }
    }
    tally.Add(BeatLoopCycles(dim));
  }
  tally.Commit(CycleUnit::kElementwise);
}

void ResidualNormA8(const StepDescriptor& d, const Card& card) {
  const int dim = d.n[0], cols_padded = d.n[1], group_size = d.n[2];
  const int groups = group_size > 0 ? cols_padded / group_size : 0;
  CycleTally tally;
  for (int t = 0; t < d.tokens; ++t) {
    float* x = card.At<float>(d.p[0]) + static_cast<int64_t>(t) * dim;
    if (d.p[1] != 0) {
      const float* y = card.At<const float>(d.p[1]) + static_cast<int64_t>(t) * dim;
      for (int j0 = 0; j0 < dim; j0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
        for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
          if (j0 + l < dim) x[j0 + l] += y[j0 + l];
        }
      }
      tally.Add(BeatLoopCycles(dim));
    }
    const float* weight = card.At<const float>(d.p[2]);
    if (d.p[6] != 0) {
      // The fp16 classifier's input: accllm_rmsnorm_a8's loops without the quantizer.
      RmsNorm(card.At<float>(d.p[6]) + static_cast<int64_t>(t) * dim, x, weight, dim, d.f);
      const int chunks = dim / accllm::kNormLanes, tail = dim - chunks * accllm::kNormLanes;
      tally.Add(int64_t{chunks} * kFaddLatency + kLoopDepth + 6 * kFaddLatency + int64_t{tail} * kFaddLatency +
                3 * kDivideLatency + BeatLoopCycles(dim));
    } else {
      accllm_rmsnorm_a8(x, weight, dim, d.f, cols_padded, group_size,
                        card.At<int8_t>(d.p[3]) + static_cast<int64_t>(t) * cols_padded,
                        card.At<float>(d.p[5]) + t, card.At<int32_t>(d.p[4]) + static_cast<int64_t>(t) * groups);
    }
  }
  tally.Commit(CycleUnit::kElementwise);
}

void A8(const StepDescriptor& d, const Card& card) {
  const int width = d.n[0], cols_padded = d.n[1], group_size = d.n[2], groups = cols_padded / group_size;
  for (int t = 0; t < d.tokens; ++t) {
    accllm_a8(card.At<const float>(d.p[0]) + static_cast<int64_t>(t) * width, width, cols_padded, group_size,
              card.At<int8_t>(d.p[1]) + static_cast<int64_t>(t) * cols_padded, card.At<float>(d.p[3]) + t,
              card.At<int32_t>(d.p[2]) + static_cast<int64_t>(t) * groups);
  }
}

// A linear descriptor on the W2A8 units' chain (kW2A8, or kW8A8 on their 8-bit mode).
void Linear(const StepDescriptor& d, Card& card) {
  const int units = d.op == StepOp::kW8A8 ? d.n[4] : d.n[5];
  RunOnChain(d, units, card.w2a8, W2A8UnitInCSim);
}

void F16(const StepDescriptor& d, const Card& card) {
  const int rows = d.n[0], cols = d.n[1], ldy = d.n[2];
  // A functional unit: per row and token, LaneDot's 8 lanes at the fma's latency, then its tail.
  CycleTally tally;
  const int64_t row_cycles = int64_t{cols / accllm::kSumLanes} * kFmaLatency + int64_t{cols % accllm::kSumLanes} * kFmaLatency;
  tally.Add(int64_t{rows} * d.tokens * row_cycles + kLoopDepth);
  tally.Commit(CycleUnit::kClassifier);
  for (int r = 0; r < rows; ++r) {
    const uint16_t* row = card.At<const uint16_t>(d.p[0]) + static_cast<int64_t>(r) * cols;
    for (int t = 0; t < d.tokens; ++t) {
      const float* x = card.At<const float>(d.p[1]) + static_cast<int64_t>(t) * cols;
      card.At<float>(d.p[2])[static_cast<int64_t>(t) * ldy + r] =
          LaneDot([&](int j) { return HalfToFloat(row[j]); }, [&](int j) { return x[j]; }, cols);
    }
  }
}

// `heads` vectors of head_size values into the KV4 cache's `region` (key or value codes; their
// params the region after), head h at vector first + h * page_tokens: 4-bit codes (low nibble
// first) with an fp16 scale and minimum per vector, as runtime/kv/kv_storage.h's QuantizeKv4.
// Each loop runs over all the heads: their extremes, their scales (a head per cycle through the
// divider chain), their codes.
void Kv4WriteHeads(const float* x, int head_size, int heads, int64_t first, const KvChannels& kv, int region,
                   CycleTally& tally) {
  const int64_t page_tokens = kv.page_tokens;
  const int beats = (head_size + kElementLanes - 1) / kElementLanes;  // per head
  float lo[kMaxKvHeads], hi[kMaxKvHeads], min[kMaxKvHeads], inverse[kMaxKvHeads];
  for (int s = 0; s < heads * beats; ++s) {  // extremes: the same in any order
#pragma HLS PIPELINE II = 1
    const int h = s / beats, i0 = s % beats * kElementLanes;
    for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
      const int i = i0 + l;
      if (i < head_size) {
        const float value = x[h * head_size + i];
        lo[h] = i == 0 ? value : std::min(lo[h], value);
        hi[h] = i == 0 ? value : std::max(hi[h], value);
      }
    }
  }
  tally.Add(static_cast<int64_t>(heads) * beats + kLoopDepth);
  for (int h = 0; h < heads; ++h) {
#pragma HLS PIPELINE II = 1
    const uint16_t min16 = FloatToHalf(lo[h]);
    min[h] = HalfToFloat(min16);
    const uint16_t scale16 = FloatToHalf((hi[h] - min[h]) / 15.0f);
    const float scale = HalfToFloat(scale16);
    inverse[h] = scale > 0.0f ? 1.0f / scale : 0.0f;
    *kv.Vector<Kv4Param>(region + 1, head_size, first + h * page_tokens) = {scale16, min16};
  }
  tally.Add(heads + 2 * kDivideLatency + kLoopDepth);
  for (int s = 0; s < heads * beats; ++s) {
#pragma HLS PIPELINE II = 1
    const int h = s / beats, i0 = s % beats * kElementLanes;
    uint8_t* out = kv.Vector<uint8_t>(region, head_size, first + h * page_tokens);
    for (int p = 0; p < kElementLanes; p += 2) {
#pragma HLS UNROLL
      const int i = i0 + p;
      if (i < head_size) {
        uint8_t pair = 0;
        for (int j = 0; j < 2; ++j) {
          const float q = std::clamp(std::nearbyint((x[h * head_size + i + j] - min[h]) * inverse[h]), 0.0f, 15.0f);
          pair |= static_cast<uint8_t>(q) << (4 * j);
        }
        out[i / 2] = pair;
      }
    }
  }
  tally.Add(static_cast<int64_t>(heads) * beats + kLoopDepth);
}

// Per token, over all its heads at once: q saved unrotated, RoPE on q and k, the Hadamard
// rotation of k and v, both written to the cache.
void RopeKvWrite(const StepDescriptor& d, const Card& card) {
  const int dim = d.n[0], kv_heads = d.n[1], hs = d.n[2], rotate = d.n[4];
  const int kv_dim = kv_heads * hs;
  const KvChannels kv = KvChannelsAt(card.shared, card.kv, d.p[6], d.n[3]);
  const int32_t* positions = card.At<const int32_t>(d.p[4]);
  const int32_t* vectors = card.At<const int32_t>(d.p[5]);
  CycleTally tally;
  for (int t = 0; t < d.tokens; ++t) {
    float* q = card.At<float>(d.p[0]) + static_cast<int64_t>(t) * dim;
    CopyBeats(card.At<float>(d.p[1]) + static_cast<int64_t>(t) * dim, q, dim, tally);
    accllm_rope(q, dim, hs, positions[t], d.f);
    float* k = card.At<float>(d.p[2]) + static_cast<int64_t>(t) * kv_dim;
    float* v = card.At<float>(d.p[3]) + static_cast<int64_t>(t) * kv_dim;
    accllm_rope(k, kv_dim, hs, positions[t], d.f);
    if (rotate) {
      accllm_hadamard(k, hs, kv_heads);
      accllm_hadamard(v, hs, kv_heads);
    }
    Kv4WriteHeads(k, hs, kv_heads, vectors[t], kv, /*key codes*/ 0, tally);
    Kv4WriteHeads(v, hs, kv_heads, vectors[t], kv, /*value codes*/ 2, tally);
  }
  tally.Commit(CycleUnit::kElementwise);
}

void Attention(const StepDescriptor& d, Card& card) {
  const int heads = d.n[0], hs = d.n[1], rotate = d.n[2];
  const int dim = heads * hs, items = d.tokens * heads;
  const float* q = card.At<const float>(d.p[0]);
  const float* q_raw = card.At<const float>(d.p[1]);
  const int32_t* sink_positions = card.At<const int32_t>(d.p[2]);
  float* queries = card.At<float>(d.p[11]);
  float* sink_queries = card.At<float>(d.p[12]);
  float* out = card.At<float>(d.p[13]);
  CycleTally tally;
  CopyBeats(queries, q, d.tokens * dim, tally);  // item t * heads + h is q's head h of token t
  if (rotate) accllm_hadamard(queries, hs, items);
  for (int t = 0; t < d.tokens; ++t) {
    if (sink_positions[t] < 0) continue;
    float* sink = sink_queries + static_cast<int64_t>(t) * dim;
    CopyBeats(sink, q_raw + static_cast<int64_t>(t) * dim, dim, tally);
    accllm_rope(sink, dim, hs, sink_positions[t], d.f);
    if (rotate) accllm_hadamard(sink, hs, heads);
  }
  RunOnChain(d, d.n[5], card.attention,
             AttentionUnitInCSim);
  if (rotate) accllm_hadamard(out, hs, items);  // back from the cache's basis
  tally.Commit(CycleUnit::kElementwise);
}

void SwiGlu(const StepDescriptor& d, const Card& card) {
  const int hidden = d.n[0], segment = d.n[1], block = d.n[2];
  for (int t = 0; t < d.tokens; ++t) {
    for (int first = 0; first < hidden; first += segment) {
      const int size = std::min(segment, hidden - first);
      float* h = card.At<float>(d.p[0]) + static_cast<int64_t>(t) * hidden + first;
      accllm_swiglu(h, card.At<const float>(d.p[1]) + static_cast<int64_t>(t) * hidden + first, size);
      if (block > 0) accllm_hadamard(h, size, 1);
    }
  }
}

void GatherRows(const StepDescriptor& d, const Card& card) {
  const int width = d.n[0];
  float* x = card.At<float>(d.p[0]);
  const int32_t* rows = card.At<const int32_t>(d.p[1]);
  CycleTally tally;
  for (int r = 0; r < d.tokens; ++r) {
    CopyBeats(x + static_cast<int64_t>(r) * width, x + static_cast<int64_t>(rows[r]) * width, width, tally);
  }
  tally.Commit(CycleUnit::kElementwise);
}

}  // namespace

#ifndef ACCLLM_VITIS_HLS
int64_t SequencerStarts() { return sequencer_starts.load(); }

void RunSequencerInCSim(const StepDescriptor* program, int count) {
  CommandStream w2a8_commands, w2a8_returned, attention_commands, attention_returned;
  TokenStream w2a8_seed, w2a8_done, attention_seed, attention_done;
  accllm_sequencer(program, count, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr, nullptr,
                   nullptr, w2a8_commands, w2a8_returned, w2a8_seed, w2a8_done, attention_commands, attention_returned,
                   attention_seed, attention_done);
}
#endif

}  // namespace accllm::hls

extern "C" void accllm_sequencer(const accllm::hls::StepDescriptor* program, int count, float* shared_floats,
                                 int32_t* shared_ints, int8_t* shared_codes, uint8_t* shared_bytes,
                                 uint16_t* shared_halves, uint64_t* shared_words, uint64_t shared_base,
                                 uint8_t* kv0, uint8_t* kv1, uint8_t* kv2, uint8_t* kv3,
                                 accllm::hls::CommandStream& w2a8_commands, accllm::hls::CommandStream& w2a8_returned,
                                 accllm::hls::TokenStream& w2a8_seed, accllm::hls::TokenStream& w2a8_done,
                                 accllm::hls::CommandStream& attention_commands,
                                 accllm::hls::CommandStream& attention_returned,
                                 accllm::hls::TokenStream& attention_seed, accllm::hls::TokenStream& attention_done) {
// The descriptor list; the shared channels (activations, tables, norms, the embedding, the fp16
// classifier), one master per element type; one master per KV pseudo-channel (the KV4 writes).
#pragma HLS INTERFACE m_axi port = program offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = shared_floats offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_ints offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_codes offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_bytes offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_halves offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_words offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = kv0 offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = kv1 offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = kv2 offset = slave bundle = gmem4
#pragma HLS INTERFACE m_axi port = kv3 offset = slave bundle = gmem5
#pragma HLS INTERFACE axis port = w2a8_commands
#pragma HLS INTERFACE axis port = w2a8_returned
#pragma HLS INTERFACE axis port = w2a8_seed
#pragma HLS INTERFACE axis port = w2a8_done
#pragma HLS INTERFACE axis port = attention_commands
#pragma HLS INTERFACE axis port = attention_returned
#pragma HLS INTERFACE axis port = attention_seed
#pragma HLS INTERFACE axis port = attention_done
#pragma HLS INTERFACE s_axilite port = return
  using namespace accllm::hls;
#ifndef ACCLLM_VITIS_HLS
  sequencer_starts.fetch_add(1);
#endif
  Card card{{}, {kv0, kv1, kv2, kv3}, {w2a8_commands, w2a8_returned, w2a8_seed, w2a8_done},
            {attention_commands, attention_returned, attention_seed, attention_done}};
  card.shared.f32 = {shared_floats, shared_base};
  card.shared.i32 = {shared_ints, shared_base};
  card.shared.i8 = {shared_codes, shared_base};
  card.shared.u8 = {shared_bytes, shared_base};
  card.shared.u16 = {shared_halves, shared_base};
  card.shared.u64 = {shared_words, shared_base};
  for (int i = 0; i < count; ++i) {
    const StepDescriptor& d = program[i];
    // Each descriptor: its beats read, then its op run here or sent down a chain (a round trip).
    CycleTally tally;
    tally.Add(DescriptorReadCycles());
    tally.Add(ChainCycles(d));
    tally.Commit(CycleUnit::kSequencer);
    switch (d.op) {
      case StepOp::kEmbed: Embed(d, card); break;
      case StepOp::kResidualNormA8: ResidualNormA8(d, card); break;
      case StepOp::kA8: A8(d, card); break;
      case StepOp::kW2A8:
      case StepOp::kW8A8: Linear(d, card); break;
      case StepOp::kF16: F16(d, card); break;
      case StepOp::kRopeKvWrite: RopeKvWrite(d, card); break;
      case StepOp::kAttention: Attention(d, card); break;
      case StepOp::kSwiGlu: SwiGlu(d, card); break;
      case StepOp::kGatherRows: GatherRows(d, card); break;
      case StepOp::kStop: {
        // Both chains' units return; so does the sequencer.
        RunOnChain(d, d.n[0], card.w2a8, W2A8UnitInCSim);
        RunOnChain(d, d.n[1], card.attention, AttentionUnitInCSim);
        return;
      }
    }
  }
}
