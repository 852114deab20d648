#include "fpga/kernels/sequencer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/elementwise.h"
#include "fpga/kernels/hls_compat.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/w2a8_engine.h"
#include "fpga/kernels/w8a8_engine.h"
#include "runtime/common/lane_sum.h"
#include "runtime/common/nn_ops.h"

namespace accllm::hls {
namespace {

#ifndef ACCLLM_VITIS_HLS
std::atomic<int64_t> sequencer_starts{0};
thread_local ScopedDeviceMemory::Map device_memory = nullptr;
#endif

// A buffer named by its device address (see sequencer.h).
template <typename T>
T* At(uint64_t address) {
#ifndef ACCLLM_VITIS_HLS
  if (device_memory != nullptr) return static_cast<T*>(device_memory(address));
#endif
  return reinterpret_cast<T*>(static_cast<uintptr_t>(address));
}

constexpr int kRowTile = 16;  // rows per W2/W8 row tile (runtime/quant/w2.h kW2RowTile)

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

void Embed(const StepDescriptor& d) {
  const int dim = d.n[0];
  const uint16_t* table = At<const uint16_t>(d.p[0]);
  const int32_t* tokens = At<const int32_t>(d.p[1]);
  float* x = At<float>(d.p[2]);
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

void ResidualNormA8(const StepDescriptor& d) {
  const int dim = d.n[0], cols_padded = d.n[1], group_size = d.n[2];
  const int groups = group_size > 0 ? cols_padded / group_size : 0;
  CycleTally tally;
  for (int t = 0; t < d.tokens; ++t) {
    float* x = At<float>(d.p[0]) + static_cast<int64_t>(t) * dim;
    if (d.p[1] != 0) {
      const float* y = At<const float>(d.p[1]) + static_cast<int64_t>(t) * dim;
      for (int j0 = 0; j0 < dim; j0 += kElementLanes) {
#pragma HLS PIPELINE II = 1
        for (int l = 0; l < kElementLanes; ++l) {
#pragma HLS UNROLL
          if (j0 + l < dim) x[j0 + l] += y[j0 + l];
        }
      }
      tally.Add(BeatLoopCycles(dim));
    }
    const float* weight = At<const float>(d.p[2]);
    if (d.p[6] != 0) {
      // The fp16 classifier's input: accllm_rmsnorm_a8's loops without the quantizer.
      RmsNorm(At<float>(d.p[6]) + static_cast<int64_t>(t) * dim, x, weight, dim, d.f);
      const int chunks = dim / accllm::kNormLanes, tail = dim - chunks * accllm::kNormLanes;
      tally.Add(int64_t{chunks} * kFaddLatency + kLoopDepth + 6 * kFaddLatency + int64_t{tail} * kFaddLatency +
                3 * kDivideLatency + BeatLoopCycles(dim));
    } else {
      accllm_rmsnorm_a8(x, weight, dim, d.f, cols_padded, group_size, At<int8_t>(d.p[3]) + static_cast<int64_t>(t) * cols_padded,
                        At<float>(d.p[5]) + t, At<int32_t>(d.p[4]) + static_cast<int64_t>(t) * groups);
    }
  }
  tally.Commit(CycleUnit::kElementwise);
}

void A8(const StepDescriptor& d) {
  const int width = d.n[0], cols_padded = d.n[1], group_size = d.n[2], groups = cols_padded / group_size;
  for (int t = 0; t < d.tokens; ++t) {
    accllm_a8(At<const float>(d.p[0]) + static_cast<int64_t>(t) * width, width, cols_padded, group_size,
              At<int8_t>(d.p[1]) + static_cast<int64_t>(t) * cols_padded, At<float>(d.p[3]) + t,
              At<int32_t>(d.p[2]) + static_cast<int64_t>(t) * groups);
  }
}

// Every compute unit over its stripe of a layer's row tiles (as fpga/host/stripe_plan.h splits
// them), from the buffers in its own channel, in calls of at most kW2A8TokenLanes tokens:
// call(unit, first row, rows, tiles, first token, tokens); the unit's rows land at their place.
template <typename Call>
void ForEachUnitCall(int rows, int units_wanted, int tokens, const Call& call) {
  const int tiles = (rows + kRowTile - 1) / kRowTile;
  const int units = std::max(1, std::min(units_wanted, tiles));
  for (int u = 0; u < units; ++u) {
    const int tile_begin = static_cast<int>(static_cast<int64_t>(tiles) * u / units);
    const int tile_end = static_cast<int>(static_cast<int64_t>(tiles) * (u + 1) / units);
    const int row0 = tile_begin * kRowTile;
    for (int t0 = 0; t0 < tokens; t0 += kW2A8TokenLanes) {
      call(u, row0, std::min(rows, tile_end * kRowTile) - row0, tile_end - tile_begin, t0,
           std::min(kW2A8TokenLanes, tokens - t0));
    }
  }
}

void W2A8(const StepDescriptor& d) {
  const int rows = d.n[0], cols_padded = d.n[1], group_size = d.n[2], sparse24 = d.n[3], ldy = d.n[4];
  const int groups = cols_padded / group_size;
  const uint64_t* stripes = At<const uint64_t>(d.p[0]);  // per unit: codes, 2:4 index, scales, zeros
  ForEachUnitCall(rows, d.n[5], d.tokens, [&](int u, int row0, int stripe_rows, int stripe_tiles, int t0, int n) {
    const uint64_t* stripe = stripes + 4 * u;
    accllm_w2a8(At<const Beat>(stripe[0]), At<const Beat>(stripe[1]), At<const uint16_t>(stripe[2]),
                At<const uint8_t>(stripe[3]), At<const int8_t>(d.p[1]) + static_cast<int64_t>(t0) * cols_padded,
                At<const int32_t>(d.p[2]) + static_cast<int64_t>(t0) * groups, At<const float>(d.p[3]) + t0,
                At<float>(d.p[4]) + static_cast<int64_t>(t0) * ldy + row0, stripe_rows, cols_padded, group_size,
                sparse24, n, ldy, 0, stripe_tiles);
  });
}

// The classifier in 8 bits on every unit's 8-bit mode.
void W8A8(const StepDescriptor& d) {
  const int rows = d.n[0], cols_padded = d.n[1], group_size = d.n[2], ldy = d.n[3];
  const uint64_t* stripes = At<const uint64_t>(d.p[0]);  // per unit: codes, scales
  ForEachUnitCall(rows, d.n[4], d.tokens, [&](int u, int row0, int stripe_rows, int stripe_tiles, int t0, int n) {
    const uint64_t* stripe = stripes + 2 * u;
    W8A8Engine<kW2A8TokenLanes>(At<const Beat>(stripe[0]), At<const float>(stripe[1]),
                                At<const int8_t>(d.p[1]) + static_cast<int64_t>(t0) * cols_padded,
                                At<const float>(d.p[2]) + t0, At<float>(d.p[3]) + static_cast<int64_t>(t0) * ldy + row0,
                                stripe_rows, cols_padded, group_size, n, ldy, 0, stripe_tiles);
  });
}

void F16(const StepDescriptor& d) {
  const int rows = d.n[0], cols = d.n[1], ldy = d.n[2];
  // A functional unit: per row and token, LaneDot's 8 lanes at the fma's latency, then its tail.
  CycleTally tally;
  const int64_t row_cycles = int64_t{cols / accllm::kSumLanes} * kFmaLatency + int64_t{cols % accllm::kSumLanes} * kFmaLatency;
  tally.Add(int64_t{rows} * d.tokens * row_cycles + kLoopDepth);
  tally.Commit(CycleUnit::kClassifier);
  for (int r = 0; r < rows; ++r) {
    const uint16_t* row = At<const uint16_t>(d.p[0]) + static_cast<int64_t>(r) * cols;
    for (int t = 0; t < d.tokens; ++t) {
      const float* x = At<const float>(d.p[1]) + static_cast<int64_t>(t) * cols;
      At<float>(d.p[2])[static_cast<int64_t>(t) * ldy + r] =
          LaneDot([&](int j) { return HalfToFloat(row[j]); }, [&](int j) { return x[j]; }, cols);
    }
  }
}

// The KV channels of a descriptor: the card's table, the layer's first vector.
KvChannels ChannelsOf(uint64_t table_address, int64_t first_vector) {
  const KvChannelTable& table = *At<const KvChannelTable>(table_address);
  KvChannels kv{};
  for (int c = 0; c < kKvChannels; ++c) kv.channel[c] = At<uint8_t>(table.channel[c]);
  for (int r = 0; r < 4; ++r) kv.region_offset[r] = table.region_offset[r];
  kv.page_tokens = table.page_tokens;
  kv.first_vector = first_vector;
  return kv;
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
void RopeKvWrite(const StepDescriptor& d) {
  const int dim = d.n[0], kv_heads = d.n[1], hs = d.n[2], rotate = d.n[4];
  const int kv_dim = kv_heads * hs;
  const KvChannels kv = ChannelsOf(d.p[6], d.n[3]);
  const int32_t* positions = At<const int32_t>(d.p[4]);
  const int32_t* vectors = At<const int32_t>(d.p[5]);
  CycleTally tally;
  for (int t = 0; t < d.tokens; ++t) {
    float* q = At<float>(d.p[0]) + static_cast<int64_t>(t) * dim;
    CopyBeats(At<float>(d.p[1]) + static_cast<int64_t>(t) * dim, q, dim, tally);
    accllm_rope(q, dim, hs, positions[t], d.f);
    float* k = At<float>(d.p[2]) + static_cast<int64_t>(t) * kv_dim;
    float* v = At<float>(d.p[3]) + static_cast<int64_t>(t) * kv_dim;
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

void Attention(const StepDescriptor& d) {
  const int heads = d.n[0], hs = d.n[1], rotate = d.n[2];
  const int dim = heads * hs, items = d.tokens * heads;
  const float* q = At<const float>(d.p[0]);
  const float* q_raw = At<const float>(d.p[1]);
  const int32_t* sink_positions = At<const int32_t>(d.p[2]);
  float* queries = At<float>(d.p[11]);
  float* sink_queries = At<float>(d.p[12]);
  float* out = At<float>(d.p[13]);
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
  const KvChannels kv = ChannelsOf(d.p[7], d.n[4]);
  accllm_kv4_attention(queries, sink_queries, At<const int32_t>(d.p[3]), At<const int32_t>(d.p[4]), items, kv.channel[0],
                       kv.channel[1], kv.channel[2], kv.channel[3], static_cast<int>(kv.region_offset[1]),
                       static_cast<int>(kv.region_offset[2]), static_cast<int>(kv.region_offset[3]),
                       static_cast<int>(kv.page_tokens), static_cast<int>(kv.first_vector), At<const int32_t>(d.p[5]),
                       At<const int32_t>(d.p[6]), hs, out);
  if (rotate) accllm_hadamard(out, hs, items);  // back from the cache's basis
  tally.Commit(CycleUnit::kElementwise);
}

void SwiGlu(const StepDescriptor& d) {
  const int hidden = d.n[0], segment = d.n[1], block = d.n[2];
  for (int t = 0; t < d.tokens; ++t) {
    for (int first = 0; first < hidden; first += segment) {
      const int size = std::min(segment, hidden - first);
      float* h = At<float>(d.p[0]) + static_cast<int64_t>(t) * hidden + first;
      accllm_swiglu(h, At<const float>(d.p[1]) + static_cast<int64_t>(t) * hidden + first, size);
      if (block > 0) accllm_hadamard(h, size, 1);
    }
  }
}

void GatherRows(const StepDescriptor& d) {
  const int width = d.n[0];
  float* x = At<float>(d.p[0]);
  const int32_t* rows = At<const int32_t>(d.p[1]);
  CycleTally tally;
  for (int r = 0; r < d.tokens; ++r) {
    CopyBeats(x + static_cast<int64_t>(r) * width, x + static_cast<int64_t>(rows[r]) * width, width, tally);
  }
  tally.Commit(CycleUnit::kElementwise);
}

}  // namespace

#ifndef ACCLLM_VITIS_HLS
int64_t SequencerStarts() { return sequencer_starts.load(); }

ScopedDeviceMemory::ScopedDeviceMemory(Map memory) : previous_(device_memory) { device_memory = memory; }
ScopedDeviceMemory::~ScopedDeviceMemory() { device_memory = previous_; }
#endif

}  // namespace accllm::hls

extern "C" void accllm_sequencer(const accllm::hls::StepDescriptor* program, int count) {
#pragma HLS INTERFACE m_axi port = program offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  using accllm::hls::StepOp;
#ifndef ACCLLM_VITIS_HLS
  accllm::hls::sequencer_starts.fetch_add(1);
#endif
  // Each descriptor: its beats read, then its op dispatched.
  accllm::hls::CycleTally tally;
  tally.Add(static_cast<int64_t>(count) * ((sizeof(accllm::hls::StepDescriptor) + 63) / 64 + accllm::hls::kLoopDepth));
  tally.Commit(accllm::hls::CycleUnit::kSequencer);
  for (int i = 0; i < count; ++i) {
    const accllm::hls::StepDescriptor& d = program[i];
    switch (d.op) {
      case StepOp::kEmbed: accllm::hls::Embed(d); break;
      case StepOp::kResidualNormA8: accllm::hls::ResidualNormA8(d); break;
      case StepOp::kA8: accllm::hls::A8(d); break;
      case StepOp::kW2A8: accllm::hls::W2A8(d); break;
      case StepOp::kW8A8: accllm::hls::W8A8(d); break;
      case StepOp::kF16: accllm::hls::F16(d); break;
      case StepOp::kRopeKvWrite: accllm::hls::RopeKvWrite(d); break;
      case StepOp::kAttention: accllm::hls::Attention(d); break;
      case StepOp::kSwiGlu: accllm::hls::SwiGlu(d); break;
      case StepOp::kGatherRows: accllm::hls::GatherRows(d); break;
    }
  }
}
