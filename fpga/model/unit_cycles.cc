#include "fpga/model/unit_cycles.h"

#include <algorithm>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/kv4_attention.h"

namespace accllm::fpga {

using hls::kFmaLatency;
using hls::kLoopDepth;

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
  return q * head_size + kLoopDepth                       // the queries and their sums
         + runs + kLoopDepth                               // the lanes' run counts
         + q * longest + runs + kLoopDepth                 // scores
         + q * longest + kLoopDepth                        // exponentials and sums
         + q * longest + runs + kLoopDepth                 // values
         + q * head_size + kLoopDepth;                     // the outputs
}

}  // namespace accllm::fpga
