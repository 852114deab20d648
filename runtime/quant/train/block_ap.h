// Block-wise reconstruction of a quantized model (EfficientQAT's Block-AP, OmniQuant-style):
// layer by layer, the latent weights and group scales of the layer's seven W2 matrices are
// trained by Adam so that the quantized layer, fed what the quantized layers before it produce,
// reproduces what the fp32 layer produces from the fp32 model's activations (mean squared error
// over the calibration sequences). Zero points, 2:4 masks and the packed format are unchanged; a
// layer whose trained matrices do worse than the ones it was given keeps those.
//
// Cost: one forward and backward pass of a layer per calibration sequence and epoch, in fp32
// matrix products; for a model of L layers and P linear weights per layer it grows as
// L * P * tokens * epochs (7B: about 200x gutenberg30M's per-token work per layer, 4x the layers).
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/train/trainable_w2.h"

namespace accllm {

struct BlockApOptions {
  int epochs = 4;  // gutenberg30M: 4 epochs +13.4% over fp32 (docs/QUALITY.md)
  int batch_sequences = 2;  // sequences per Adam step
  AdamOptions adam;
  LrSchedule schedule = LrSchedule::kCosine;
  uint64_t seed = 1;        // the order sequences are visited in
  int threads = 0;          // matrix-product threads; 0: one per hardware thread
};

struct BlockApReport {
  int layer = 0;
  // Mean squared error of the layer's output against the fp32 model's, over the calibration
  // sequences, before and after training; `target_energy` is the mean square of that output.
  double error_before = 0, error_after = 0, target_energy = 0;
  std::vector<double> epoch_error;  // the mean over each epoch's steps, as trained
  bool kept_original = false;       // training did worse than the matrices it started from
  double seconds = 0;
};

// Refines `packed`, the quantized form of `model` (same configuration), in place. `sequences`
// are token ids, each starting at position 0. `positions` (optional, one per packed linear): where
// GPTQ rounded each weight (QuantizeModel's), the latent weights' start.
absl::Status RefineBlocks(const Model& model, std::span<const std::vector<int>> sequences, const BlockApOptions& options,
                          PackedContents& packed, std::span<const std::vector<float>> positions = {},
                          const std::function<void(const BlockApReport&)>& on_layer = nullptr);

}  // namespace accllm
