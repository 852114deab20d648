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
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/model.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/train/layer_backprop.h"
#include "runtime/quant/train/trainable_w2.h"

namespace accllm {

struct BlockApOptions {
  int epochs = 4;  // gutenberg30M: 4 epochs +13.4% over fp32 (docs/QUALITY.md)
  int batch_sequences = 2;  // sequences per Adam step
  AdamOptions adam;
  LrSchedule schedule = LrSchedule::kCosine;
  uint64_t seed = 1;        // the order sequences are visited in
  int threads = 0;          // 0: one per hardware thread; with at least as many sequences as
                            // threads, a sequence per thread, else threaded matrix products
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

using Activations = std::vector<std::vector<float>>;  // one (tokens x dim) matrix per sequence

// Block-AP one layer at a time, for callers that hold one layer's weights at a time
// (QuantizeLayerByLayer); RefineBlocks runs it over a whole model. It keeps the quantized model's
// input to the next layer; the fp32 model's is the caller's.
class BlockRefiner {
 public:
  // Checks what Refine assumes of the sequences and options.
  static absl::Status Validate(const LlamaConfig& config, std::span<const std::vector<int>> sequences,
                               const BlockApOptions& options);
  // `q_in`: each sequence's input to the first layer in the quantized model (EmbedQuantized).
  // `sequences` must outlive the refiner.
  BlockRefiner(const LlamaConfig& config, std::span<const std::vector<int>> sequences, const BlockApOptions& options,
               Activations q_in);
  // Layers in order. Trains `linears` (the layer's seven W2 matrices, in LayerLinearSlots' order)
  // and, when asked, the norm gains in place against the fp32 layer `fp` (its linears and gains)
  // fed `fp_in`; `positions` (empty, or one per matrix) as for RefineBlocks. Then `fp_in` becomes
  // the fp32 layer's output, and the quantized input moves one layer on.
  BlockApReport Refine(int layer, const LayerWeights& fp, Activations& fp_in, std::span<W2Matrix* const> linears,
                       std::span<const std::vector<float>* const> positions, std::vector<float>& att_gain,
                       std::vector<float>& ffn_gain);

 private:
  LlamaConfig c_;
  std::span<const std::vector<int>> sequences_;
  BlockApOptions options_;
  Activations q_in_, q_out_ = Activations(sequences_.size()), target_ = Activations(sequences_.size());
  std::mt19937_64 rng_;  // the order sequences are visited in, continued from layer to layer
  std::vector<std::size_t> order_;
  ThreadPool pool_;
  // One per sequence of a step: what its forward and backward pass need, and its gradients.
  struct SequenceWork {
    LayerActivations saved;
    std::vector<float> y, dy;
    LayerGradients grads;
    double error = 0;
    explicit SequenceWork(const LlamaConfig& c, bool norm_gains) : grads(c, norm_gains) {}
  };
  std::vector<SequenceWork> work_;
  std::vector<LayerActivations> scratch_;  // one per thread, for forward passes alone
  // Runs fn(thread, i) for i in [0, count): side by side, each on one thread with single-threaded
  // products, when every thread has a sequence; otherwise one at a time on threaded products.
  // `thread` < pool_.threads() is used by one call at a time.
  void ForEachSequence(std::size_t count, const std::function<void(int, std::size_t)>& fn);
};

// The tokens' rows of an fp32 embedding (tokens x dim), and of a packed model's fp16 one.
std::vector<float> EmbedSequence(const float* embedding, int dim, const std::vector<int>& tokens);
Activations EmbedQuantized(const PackedContents& packed, std::span<const std::vector<int>> sequences);

// Refines `packed`, the quantized form of `model` (same configuration), in place. `sequences`
// are token ids, each starting at position 0. `positions` (optional, one per packed linear): where
// GPTQ rounded each weight (QuantizeModel's), the latent weights' start.
absl::Status RefineBlocks(const Model& model, std::span<const std::vector<int>> sequences, const BlockApOptions& options,
                          PackedContents& packed, std::span<const std::vector<float>> positions = {},
                          const std::function<void(const BlockApReport&)>& on_layer = nullptr);

}  // namespace accllm
