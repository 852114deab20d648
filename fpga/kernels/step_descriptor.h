// A step of the layer sequencer as a list of descriptors: fpga/step_program.h builds it, the
// sequencer (sequencer.h) runs it, and the compute-unit chains (unit_chain.h) are sent the ones
// that are theirs. A descriptor names its buffers by device address (device_memory.h).
//
// Fields by op (n: integers, p: addresses; `tokens` rows, row-major [token][width]):
//   kEmbed            n = {dim};  p = {fp16 table, int32 token ids, x}
//   kResidualNormA8   x += y when p[1] != 0, then RMSNorm(x) * weight as A8 codes (or, when p[6]
//                     != 0, as floats there); n = {dim, cols_padded, group_size}, f = eps;
//                     p = {x, y, weight, codes, group sums, scales, floats}
//   kA8               n = {width, cols_padded, group_size};  p = {x, codes, group sums, scales}
//   kW2A8             y[t * ldy + r] = W x_t on the chain of W2A8 units, each over its stripe of
//                     the layer's row tiles (fpga/host/stripe_plan.h) in its own HBM channel;
//                     n = {rows, cols_padded, group_size, sparse24, ldy, units in the chain};
//                     p = {stripe table, A8 codes, group sums, scales, y}; the stripe table holds
//                     per unit the addresses of its stripe's codes, 2:4 index (0: dense), scales
//                     and zeros, each starting at the stripe's first tile
//   kW8A8             the classifier in 8 bits on the units' 8-bit mode (w8a8_engine.h), each
//                     over its stripe; n = {rows, cols_padded, group_size, ldy, units in the
//                     chain}; p = {stripe table, A8 codes, A8 scales, y}; the stripe table holds
//                     per unit the addresses of its stripe's codes and scales
//   kF16              the classifier in fp16; n = {rows, cols, ldy};  p = {weights, x, y}
//   kRopeKvWrite      per token, over its heads: q saved unrotated, RoPE on q and k, the Hadamard
//                     rotation (when n[4]), k and v quantized into the KV4 cache;
//                     n = {dim, n_kv_heads, head_size, the layer's first KV vector, rotate},
//                     f = theta; p = {q, q_raw, k, v, int32 positions, int32 KV vectors (layer
//                     0's), the card's KV channel table (kv_channels.h)}
//   kAttention        per (token, head): the query (and, for sink runs, the query at its capped
//                     position) into the cache's basis, Λ attention on the chain of attention
//                     units (each over its share of the query groups), the output back;
//                     n = {n_heads, head_size, rotate, runs, the layer's first KV vector, units
//                     in the chain}; f = theta; p = {q, q_raw, int32 sink positions (-1: none),
//                     item runs, item sink runs, run starts, run counts (layer 0's), the KV
//                     channel table, -, -, -, query scratch, sink query scratch, out}
//   kSwiGlu           h = silu(h) * h2 per token, then a block Hadamard (n[2] > 0);
//                     n = {hidden, segment, hadamard block};  p = {h, h2}
//   kGatherRows       row r = row rows[r] for r < tokens (rows[r] <= r, in order);
//                     n = {width};  p = {x, int32 rows}
//   kStop             the chains' units return, and so does the sequencer (the card is closing);
//                     n = {W2A8 units, attention units}
#pragma once

#include <cstdint>

namespace accllm::hls {

// The most KV heads the KV4 write unit takes per token (fpga/step_program.h refuses more).
inline constexpr int kMaxKvHeads = 256;

enum class StepOp : int32_t {
  kEmbed,
  kResidualNormA8,
  kA8,
  kW2A8,
  kW8A8,
  kF16,
  kRopeKvWrite,
  kAttention,
  kSwiGlu,
  kGatherRows,
  kStop,
};

struct StepDescriptor {
  StepOp op = StepOp::kEmbed;
  int32_t tokens = 0;
  int32_t n[6] = {};
  float f = 0.0f;
  uint64_t p[14] = {};
};

}  // namespace accllm::hls
