// One layer's Λ attention for a step, in the form every device runs it: each (token, head)
// query with the runs of consecutive cached vectors it sees, named by KvStorage vector numbers,
// its sink runs first. The CPU engine builds it; the CPU kernels or a card's attention units
// (fpga/kernels/kv4_attention.h, which take these arrays as they are) run it.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace accllm {

struct AttentionBatch {
  int layer = 0;
  int head_size = 0;
  int items = 0;                              // item = token * n_heads + query head
  std::vector<float> q, q_sink;               // [items][head_size], in the cache's basis
  std::vector<int32_t> item_runs;             // [items + 1]: item i has runs [item_runs[i], item_runs[i + 1])
  std::vector<int32_t> item_sink_runs;        // [items]: how many of its first runs are sinks (meet q_sink)
  std::vector<int32_t> run_start, run_count;  // first vector number and length of each run
  // The vectors this step wrote in this layer, as (first vector number, count) spans: what a
  // device that keeps the cache copies to its memory before it runs the batch.
  std::vector<std::pair<int64_t, int64_t>> written_spans;
};

}  // namespace accllm
