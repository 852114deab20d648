// 2:4 semi-structured pruning: in every group of 4 consecutive inputs of a row, keep the 2
// weights with the highest importance.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace accllm {

enum class PruneMethod { kNone, kMagnitude, kWanda };

// Importance |w_ij| (magnitude) or |w_ij| * ||x_j|| (Wanda: `input_norms` per column).
// Returns a rows x cols mask (1 = kept). note: cols must be a multiple of 4.
std::vector<uint8_t> Select24(std::span<const float> w, int rows, int cols, PruneMethod method,
                              std::span<const float> input_norms = {});

}  // namespace accllm
