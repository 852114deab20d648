// Engine weights built from quantized contents without writing a file: the packed W2 layers
// themselves (for the integer kernels) or their fp32 dequantization (to measure a weight format
// on its own, with every other part of the computation left in fp32).
#pragma once

#include "runtime/engine/engine_weights.h"
#include "runtime/model/packed_model.h"

namespace accllm {

// Views into `packed`, which must outlive the result.
EngineWeights PackedWeights(const PackedContents& packed);

// fp32 weights of `model` with every linear layer replaced by its dequantized W2 form; the
// result owns the dequantized copies (model must outlive it).
EngineWeights DequantizedWeights(const Model& model, const PackedContents& packed);

}  // namespace accllm
