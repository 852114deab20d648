// Quantization one layer at a time, for models whose fp32 copy does not fit in memory (Llama-2-7B
// is 27 GB in fp32). The weights come from a WeightSource tensor by tensor (a Hugging Face
// checkpoint converts each from its mapped shards); the calibration sequences' hidden states go
// through each layer in fp32 (LayerForward), which yields that layer's input statistics; then the
// layer is quantized and its fp32 weights dropped. What is held at once: one layer's fp32 weights,
// its Gram matrices and Hessians, the hidden states of every calibration token (tokens x dim,
// twice), one sequence's activations inside the layer, the embedding, and the packed result.
//
// It computes what Calibrate + QuantizeModel (+ RefineBlocks) compute, the residual-stream rotation
// applied tensor by tensor with the same arithmetic, up to the order of calibration's float sums.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/train/block_ap.h"

namespace accllm {

struct LayerByLayerOptions {
  QuantizeOptions quantize;  // its `recalibrate` is not used: see `sequential`
  bool rotate = false;       // the residual stream, as RotateResidualStream (seed, ffn_block)
  uint64_t rotation_seed = 1;
  int ffn_block = 0;
  // Each layer calibrated on the hidden states the quantized layers before it produce (GPTQ's
  // reference does this), at one more forward pass per layer; otherwise on the fp32 model's.
  bool sequential = false;
  // After GPTQ, each layer's block-wise reconstruction (RefineBlocks' Block-AP, layer by layer;
  // GPTQ only, not with `sequential`).
  bool block_ap = false;
  BlockApOptions block_ap_options;
};

struct LayerByLayerProgress {
  std::function<void(const LayerReport&, int done, int total)> on_linear;  // as QuantizeModel's on_layer
  std::function<void(int layer, double seconds)> on_calibrated;             // after each layer's calibration pass
  std::function<void(const BlockApReport&)> on_refined;                      // after each layer's Block-AP
};

// `sequences`: token ids, each starting with BOS and at most the model's context.
absl::StatusOr<PackedContents> QuantizeLayerByLayer(const WeightSource& source,
                                                    const std::vector<std::vector<int>>& sequences,
                                                    const LayerByLayerOptions& options,
                                                    const LayerByLayerProgress& progress = {});

}  // namespace accllm
