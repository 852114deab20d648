// A packed model's layers as the training code sees them: each layer's seven W2 matrices in one
// fixed order, and a layer's fp32 weights pointing at dense (dequantized) copies of them.
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"

namespace accllm {

inline constexpr TensorKind kLayerLinearKinds[] = {TensorKind::kWq, TensorKind::kWk, TensorKind::kWv, TensorKind::kWo,
                                                   TensorKind::kW1, TensorKind::kW2, TensorKind::kW3};

// The seven quantized matrices of one layer, as indices into packed.linears, in
// kLayerLinearKinds order; an error if one is missing.
absl::StatusOr<std::vector<std::size_t>> LayerLinearSlots(const PackedContents& packed, int layer);

// `norms` (its two gains) with the seven linears pointing into `dense` (one buffer per kind, in
// kLayerLinearKinds order).
LayerWeights WithLinears(const LayerWeights& norms, std::span<std::vector<float>> dense);

}  // namespace accllm
