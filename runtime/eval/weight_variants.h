// Engine weights built from quantized contents without writing a file: the packed W2 layers
// themselves (for the integer kernels) or their fp32 dequantization (to measure a weight format
// on its own, with every other part of the computation left in fp32).
#pragma once

#include "runtime/engine/engine_weights.h"
#include "runtime/model/packed_model.h"

namespace accllm {

// Views into `packed`, which must outlive the result.
EngineWeights PackedWeights(const PackedContents& packed);

// The same model with every W2 layer dequantized to fp32, so that it runs through fp32 kernels:
// what the integer kernels compute, in plain floating point. The result owns the copies (packed
// must outlive it).
EngineWeights DequantizedWeights(const PackedContents& packed);

// Every W2 layer of `weights` dequantized to fp32 (owned by the result); other layers unchanged.
EngineWeights DequantizeW2Layers(EngineWeights weights);

}  // namespace accllm
