// Whether a layer's attention batch fits the KV4 attention unit's on-chip buffers
// (fpga/kernels/kv4_attention.h): the query head and the scores of every token one query sees.
// Both FPGA devices (fpga-sim and a card) check before they run the unit.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "fpga/kernels/kv4_attention.h"
#include "runtime/kv/attention_batch.h"

namespace accllm::fpga {

inline absl::Status FitsAttentionUnit(const AttentionBatch& b) {
  if (b.head_size > hls::kKv4MaxHeadSize || b.head_size % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head size ", b.head_size, " does not fit the attention unit (even, at most ", hls::kKv4MaxHeadSize, ")"));
  }
  for (int i = 0; i < b.items; ++i) {
    int visible = 0;
    for (int r = b.item_runs[i]; r < b.item_runs[i + 1]; ++r) visible += b.run_count[r];
    if (visible > hls::kKv4MaxVisible) {
      return absl::InvalidArgumentError(absl::StrCat("a query sees ", visible, " tokens; the attention unit holds ",
                                                     hls::kKv4MaxVisible, " (use a Λ window)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace accllm::fpga
