#include "fpga/model/unit_cycles.h"

#include <algorithm>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/elementwise.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/w2a8_engine.h"
#include "fpga/kernels/w2a8_unit.h"
#include "runtime/common/lane_sum.h"

namespace accllm::fpga {

using hls::kDivideLatency;
using hls::kElementLanes;
using hls::kFaddLatency;
using hls::kFmaLatency;
using hls::kLoopDepth;
using hls::StepOp;

namespace {

int64_t Beats(int64_t n) { return (n + kElementLanes - 1) / kElementLanes + kLoopDepth; }

// RMSNorm's sum of squares, tree and reciprocal square root, then the normalizing pass.
int64_t NormCycles(int64_t dim) {
  const int64_t chunks = dim / kNormLanes, tail = dim - chunks * kNormLanes;
  int levels = 0;
  for (int width = kNormLanes / 2; width >= 1; width /= 2) ++levels;
  return chunks * kFaddLatency + kLoopDepth + levels * kFaddLatency + tail * kFaddLatency + 3 * kDivideLatency + Beats(dim);
}

int64_t QuantizeA8Cycles(int64_t cols_padded) { return kDivideLatency + Beats(cols_padded); }

// Blocks of up to kHadamardBlock vectors, each in passes of up to kHadamardPassStages butterfly
// stages over the whole block (the first reading it from memory, the last writing it back).
int64_t HadamardCycles(int64_t n, int64_t count) {
  int64_t stages = 0;
  for (int64_t len = 1; len < n; len <<= 1) ++stages;
  const int64_t passes = (stages + hls::kHadamardPassStages - 1) / hls::kHadamardPassStages;
  int64_t cycles = 0;
  for (int64_t v0 = 0; v0 < count; v0 += hls::kHadamardBlock) {
    cycles += passes * Beats(std::min<int64_t>(hls::kHadamardBlock, count - v0) * n);
  }
  return cycles;
}

// All of a token's heads: their extremes, their scales (a head per cycle), their codes.
int64_t Kv4WriteCycles(int64_t head_size, int64_t heads) {
  const int64_t beats = heads * ((head_size + kElementLanes - 1) / kElementLanes);
  return 2 * (beats + kLoopDepth) + heads + 2 * kDivideLatency + kLoopDepth;
}

}  // namespace

int64_t W2A8StagingCycles(const W2A8Call& c) {
  // Activations and group sums, a beat per cycle, per token.
  const int64_t groups = c.cols_padded / c.group_size;
  return c.tokens * ((c.cols_padded + 63) / 64 + (groups + 15) / 16 + 1) + kLoopDepth;
}

int64_t W2A8TileCycles(const W2A8Call& c) {
  // Each group's scale and zero reads, then its sub-blocks (2:4: two beats each); the outputs.
  const int64_t groups = c.cols_padded / c.group_size;
  const int64_t sub_blocks_per_group = (c.sparse ? c.group_size / 2 : c.group_size) / 16;
  const int64_t group = std::max<int64_t>(2 + sub_blocks_per_group * (c.sparse ? 2 : 1), kFmaLatency);
  return groups * group + c.tokens + kLoopDepth;
}

int64_t W8A8CallCycles(const W8A8Call& c) {
  const int64_t groups = c.cols_padded / c.group_size;
  const int64_t staging = c.tokens * ((c.cols_padded + 63) / 64 + 1) + kLoopDepth;
  const int64_t group = std::max<int64_t>(1 + c.group_size / 4, kFmaLatency);
  return staging + c.tiles * (groups * group + c.tokens + kLoopDepth);
}

QuerySpan QuerySpanAt(int64_t position, const LambdaConfig& lambda, int page_tokens) {
  const int64_t window_start = lambda.VisibleWindowStart(position), sink_end = lambda.SinkEnd(position);
  const auto pages = [&](int64_t begin, int64_t end) {
    return end <= begin ? 0 : (end - 1) / page_tokens - begin / page_tokens + 1;
  };
  return {pages(0, sink_end) + pages(window_start, position + 1), sink_end + (position + 1 - window_start)};
}

int64_t AttentionGroupCycles(int head_size, std::span<const QuerySpan> lanes) {
  constexpr int64_t q = hls::kAttentionQueryLanes;
  int64_t longest = 0, runs = 0;
  for (const QuerySpan& s : lanes) {
    longest = std::max(longest, s.visible);
    runs += s.runs;
  }
  const int64_t beats = (head_size + hls::kElementLanes - 1) / hls::kElementLanes;
  return q * beats + kLoopDepth + hls::kQuerySumTreeCycles  // the queries and their sums
         + runs + kLoopDepth                                // the lanes' run counts
         + q * longest + runs + kLoopDepth                  // scores
         + q * longest + kLoopDepth                         // exponentials and sums
         + q * longest + runs + kLoopDepth                  // values
         + q * beats + kLoopDepth;                          // the outputs
}

DescriptorCycles CyclesOf(const hls::StepDescriptor& d, int sink_tokens) {
  DescriptorCycles c;
  c.sequencer = hls::DescriptorReadCycles() + hls::ChainCycles(d);
  const int64_t tokens = d.tokens;
  switch (d.op) {
    case StepOp::kEmbed:
      c.elementwise = tokens * Beats(d.n[0]);
      break;
    case StepOp::kResidualNormA8: {
      const int64_t residual = d.p[1] != 0 ? Beats(d.n[0]) : 0;
      const int64_t quantize = d.p[6] != 0 ? 0 : QuantizeA8Cycles(d.n[1]);
      c.elementwise = tokens * (residual + NormCycles(d.n[0]) + quantize);
      break;
    }
    case StepOp::kA8:
      c.elementwise = tokens * (Beats(d.n[0]) + QuantizeA8Cycles(d.n[1]));
      break;
    case StepOp::kW2A8:
      break;  // the W2A8 units (W2A8CallCycles)
    case StepOp::kW8A8: {  // every unit over its stripe, in calls of T tokens
      for (int u = 0; u < d.n[4]; ++u) {
        const hls::UnitStripe s = hls::StripeOfUnit(d.n[0], d.n[4], u);
        const int64_t stripe = s.tile_end - s.tile_begin;
        for (int64_t t0 = 0; t0 < tokens; t0 += hls::kW2A8TokenLanes) {
          const int n = static_cast<int>(std::min<int64_t>(hls::kW2A8TokenLanes, tokens - t0));
          c.classifier += W8A8CallCycles({d.n[1], d.n[2], n, stripe});
        }
      }
      break;
    }
    case StepOp::kF16: {
      const int64_t rows = d.n[0], cols = d.n[1];
      c.classifier = rows * tokens * (cols / kSumLanes + cols % kSumLanes) * kFmaLatency + kLoopDepth;
      break;
    }
    case StepOp::kRopeKvWrite: {
      const int64_t dim = d.n[0], kv_heads = d.n[1], hs = d.n[2];
      const int64_t rotate = d.n[4] != 0 ? 2 * HadamardCycles(hs, kv_heads) : 0;
      c.elementwise = tokens * (2 * Beats(dim) + Beats(kv_heads * hs) + rotate + 2 * Kv4WriteCycles(hs, kv_heads));
      break;
    }
    case StepOp::kAttention: {  // the queries' preparation and the outputs' rotation back
      const int64_t heads = d.n[0], hs = d.n[1], dim = heads * hs, items = tokens * heads;
      const bool rotate = d.n[2] != 0;
      c.elementwise = Beats(tokens * dim) + (rotate ? 2 * HadamardCycles(hs, items) : 0) +
                      int64_t{sink_tokens} * (2 * Beats(dim) + (rotate ? HadamardCycles(hs, heads) : 0));
      break;
    }
    case StepOp::kSwiGlu: {
      const int64_t hidden = d.n[0], segment = d.n[1], block = d.n[2];
      for (int64_t first = 0; first < hidden; first += segment) {
        const int64_t size = std::min(segment, hidden - first);
        c.elementwise += tokens * (Beats(size) + (block > 0 ? HadamardCycles(size, 1) : 0));
      }
      break;
    }
    case StepOp::kGatherRows:
      c.elementwise = tokens * Beats(d.n[0]);
      break;
    case StepOp::kStop:
      break;
  }
  return c;
}


}  // namespace accllm::fpga
