// What a device that runs a whole step at once (the FPGA's layer sequencer) needs from the
// engine's host side: the step's tokens, where each one's keys and values go in the KV cache,
// and the page runs its queries read. The engine keeps the block tables, Λ eviction and the
// checks; the device runs every layer and the classifier.
#pragma once

#include <cstdint>
#include <span>

#include "runtime/engine/engine_weights.h"
#include "runtime/kv/attention_batch.h"

namespace accllm {

struct StepPlan {
  const EngineWeights* weights = nullptr;  // as the engine serves them (its W8 classifier included)
  bool rotate_kv = false;                  // KV4 heads stored Hadamard-rotated
  std::span<const int> tokens;
  std::span<const int32_t> positions;
  // Per token: KvStorage::VectorIndex(0, page, 0, slot) of its position (head h: + h * page_tokens;
  // layer l: + l * layer_vectors).
  std::span<const int32_t> kv_vectors;
  // Per token: the capped position at which its queries meet their sink runs, or -1 without any.
  std::span<const int32_t> sink_positions;
  // Layer 0's attention runs (item_runs, item_sink_runs, run_start, run_count; no queries).
  const AttentionBatch* attention = nullptr;
  int64_t layer_vectors = 0;
  // The tokens whose logits the step returns, in order (logits row r follows token logit_tokens[r]).
  std::span<const int32_t> logit_tokens;
};

}  // namespace accllm
