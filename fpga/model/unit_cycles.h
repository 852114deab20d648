// Cycles of the accelerator's units derived from their loop structure in fpga/kernels (trip counts
// x initiation interval + pipeline depth, per call), for the shapes a step hands them. The C
// simulation counts the same loops as they run (fpga/kernels/cycle_count.h); tests hold the two
// together on real steps. The performance model (perf_model.h) builds a step from these.
#pragma once

#include <cstdint>
#include <span>

#include "fpga/kernels/sequencer.h"  // DescriptorReadCycles, ChainCycles
#include "runtime/kv/lambda_attention.h"

namespace accllm::fpga {

// One call of a W2A8 unit: `tiles` row tiles of a layer of `cols_padded` columns, `tokens` tokens.
struct W2A8Call {
  int cols_padded = 0;
  int group_size = 128;
  bool sparse = false;
  int tokens = 1;
  int64_t tiles = 0;
};
// A call's cycles: staging its tokens, then `tiles` times one row tile.
int64_t W2A8StagingCycles(const W2A8Call& call);
int64_t W2A8TileCycles(const W2A8Call& call);
inline int64_t W2A8CallCycles(const W2A8Call& call) {
  return W2A8StagingCycles(call) + call.tiles * W2A8TileCycles(call);
}

// One call of a unit's 8-bit mode (the W8 classifier, w8a8_engine.h): staging the tokens, then
// `tiles` row tiles, per group its scales and then its sub-blocks (16 rows x 4 columns) a beat per
// cycle.
struct W8A8Call {
  int cols_padded = 0;
  int group_size = 128;
  int tokens = 1;
  int64_t tiles = 0;
};
int64_t W8A8CallCycles(const W8A8Call& call);

// What one query reads: its page runs and the tokens in them.
struct QuerySpan {
  int64_t runs = 0;
  int64_t visible = 0;
};
// The span of a query at `position` (the engine's page runs: sinks outside the window, then the
// window, each cut at page boundaries).
QuerySpan QuerySpanAt(int64_t position, const LambdaConfig& lambda, int page_tokens);

// A group of up to hls::kAttentionQueryLanes (token, head) queries through the attention unit,
// interleaved: its cycles follow its longest lane.
int64_t AttentionGroupCycles(int head_size, std::span<const QuerySpan> lanes);

// The cycles one descriptor of the layer sequencer spends outside the W2A8 and attention units,
// from its fields as sequencer.cc and elementwise.cc loop over them (a beat of 16 floats per
// cycle; RMSNorm's sum of squares at one 64-wide chunk per add latency). `sink_tokens`: how many
// of the step's tokens have sink queries to prepare (kAttention; it reads that from device
// memory, not from the descriptor).
struct DescriptorCycles {
  int64_t elementwise = 0;  // norms, A8, RoPE, KV4 writes, SwiGLU, Hadamard, embedding, gathers
  int64_t classifier = 0;   // the W8 classifier on every unit's 8-bit mode (all units' cycles), or the fp16 unit
  int64_t sequencer = 0;    // the sequencer reading it and, for a chain's descriptor, the chain's round trip
};
DescriptorCycles CyclesOf(const hls::StepDescriptor& d, int sink_tokens);

}  // namespace accllm::fpga
