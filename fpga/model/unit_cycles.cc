#include "fpga/model/unit_cycles.h"

#include <algorithm>

#include "fpga/kernels/cycle_count.h"

namespace accllm::fpga {

using hls::kFaddLatency;
using hls::kFmaLatency;
using hls::kLoopDepth;

int64_t W2A8CallCycles(const W2A8Call& c) {
  // Activations and group sums, a beat per cycle, per token.
  const int64_t groups = c.cols_padded / c.group_size;
  const int64_t load = c.tokens * ((c.cols_padded + 63) / 64 + (groups + 15) / 16 + 1) + kLoopDepth;
  // Per tile: each group's scale and zero reads, then its sub-blocks (2:4: two beats each).
  const int64_t sub_blocks_per_group = (c.sparse ? c.group_size / 2 : c.group_size) / 16;
  const int64_t group = std::max<int64_t>(2 + sub_blocks_per_group * (c.sparse ? 2 : 1), kFmaLatency);
  const int64_t tile = groups * group + c.tokens + kLoopDepth;
  return load + c.tiles * tile;
}

QuerySpan QuerySpanAt(int64_t position, const LambdaConfig& lambda, int page_tokens) {
  const int64_t window_start = std::max<int64_t>(0, lambda.WindowStart(position));
  const int64_t sink_end = std::min<int64_t>(lambda.full() ? 0 : lambda.sinks, window_start);
  const auto pages = [&](int64_t begin, int64_t end) {
    return end <= begin ? 0 : (end - 1) / page_tokens - begin / page_tokens + 1;
  };
  return {pages(0, sink_end) + pages(window_start, position + 1), sink_end + (position + 1 - window_start)};
}

int64_t AttentionQueryCycles(int head_size, const QuerySpan& s) {
  return head_size * kFaddLatency + kLoopDepth              // the query and its sums
         + 2 * s.visible + s.runs * kLoopDepth              // scores: two reads a key
         + s.visible * (2 + kFaddLatency) + 3 * kLoopDepth  // softmax
         + kFmaLatency * s.visible + s.runs * kLoopDepth    // values
         + head_size + kLoopDepth;                          // the output
}

}  // namespace accllm::fpga
