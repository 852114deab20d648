// KIVI's KV4 format (Liu et al. 2024: keys quantized per channel, values per token) simulated on
// an fp32 cache, to measure it against the served KV4 format (per token, Hadamard-rotated heads)
// on the same engine. Not a serving format: nothing stores it.
//
// KIVI groups G consecutive tokens: a group's keys get one 4-bit scale and min per channel, its
// values one per token; until a group is complete its tokens stay in full precision (KIVI's
// "residual"), so a query sees earlier groups quantized and its own group exact. The engine calls
// this after a layer's attention for every group its step completed, so prefill steps must end
// on group boundaries for the simulation to be exact (ScoreChunks does when G divides the step).
// Without the exact open group (the residual costs memory: the same footprint as the served
// format needs it quantized), each token is stored per token in KV4 when written and its group's
// keys are re-quantized per channel from those codes when the group completes.
#pragma once

#include <cstdint>
#include <span>

#include "runtime/kv/kv_storage.h"

namespace accllm {

// x <- its KV4 round trip (QuantizeKv4's 4-bit codes, fp16 scale and min; an even count).
void RoundTripKv4(std::span<float> x);

// Round-trips one KV head's completed group: `vectors` are the vector numbers of its G tokens,
// oldest first, in an fp32 `kv`. Keys per channel over the G tokens; values per token over the
// head unless `values_too` is false (they were stored quantized already).
void RoundTripKiviGroup(KvStorage& kv, std::span<const int64_t> vectors, int head_size, bool values_too);

}  // namespace accllm
