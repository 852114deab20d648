// Compresses a loaded fp32 model into packed W2 contents: optional 2:4 pruning (magnitude or
// Wanda) of chosen layers, then 2-bit group-wise quantization (round-to-nearest or GPTQ).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/quant/calibration.h"
#include "runtime/quant/gptq.h"
#include "runtime/quant/linalg.h"
#include "runtime/quant/prune24.h"

namespace accllm {

enum class QuantMethod { kRtn, kGptq };

struct QuantizeOptions {
  int group_size = 128;
  QuantMethod method = QuantMethod::kGptq;
  PruneMethod prune = PruneMethod::kNone;
  // Which linear layers are pruned: "all", "attn", "ffn", or layer indices "0,2,5".
  std::string prune_layers = "all";
  std::string source;  // recorded in the metadata
  int threads = 0;     // 0: one per hardware thread
  bool act_order = false;  // GPTQ: see GptqOptions
  bool refit_scales = true;  // GPTQ: see GptqOptions
  // Sequential calibration (what GPTQ's reference implementation does): each layer's statistics
  // come from the model whose earlier layers are already quantized, so each layer compensates
  // the error the layers before it left. Called, for every layer after the first, on that model
  // (the earlier layers dequantized, the layers after it left out). Null: every layer's
  // statistics come from `stats` (the fp32 model's).
  std::function<absl::StatusOr<CalibrationStats>(const Model& prefix)> recalibrate;
};

struct LayerReport {
  TensorId id;
  bool sparse = false;
  double weight_error = 0;  // ||W - Q||^2 / ||W||^2
  double output_error = -1; // ||(W - Q) X||^2 / ||W X||^2 on calibration inputs; -1 without
};

// Which layers `spec` selects; an error names a bad spec.
absl::StatusOr<std::function<bool(const TensorId&)>> ParseLayerSelection(const std::string& spec, int n_layers);

// Quantizes linear layers one at a time with the options' method, 2:4 selection and threads;
// the Hessians of one layer's inputs are factored once for the matrices that share them.
class LinearQuantizer {
 public:
  static absl::StatusOr<std::unique_ptr<LinearQuantizer>> Create(const LlamaConfig& config, const QuantizeOptions& options);
  // `input`: the statistics of the matrix's input (null only for RTN with magnitude or no
  // pruning). `positions`: see QuantizeModel (empty: not wanted). Layers come in order.
  absl::StatusOr<W2Matrix> Quantize(const TensorId& id, std::span<const float> w, const InputStats* input,
                                    std::span<float> positions, LayerReport* report);

 private:
  LinearQuantizer(const LlamaConfig& config, const QuantizeOptions& options,
                  std::function<bool(const TensorId&)> prune_selected);
  const LlamaConfig config_;
  const QuantizeOptions options_;
  const std::function<bool(const TensorId&)> prune_selected_;
  ThreadPool pool_;
  // The Hessians' factorizations run on BLAS's threads; GPTQ's products, one thread per tile.
  const ScopedGemmThreads factorization_threads_;
  std::map<const InputStats*, GptqHessian> hessians_;
  int hessian_layer_ = -1;
};

// The metadata QuantizeModel records (method, pruning, source, precisions).
void SetPackedMetadata(const QuantizeOptions& options, PackedContents& out);

// `stats` may be null for RTN with magnitude (or no) pruning. `on_layer` reports each layer as
// it is done (progress). With `positions` (GPTQ only), also returns, for each linear in the
// result's order, where each weight stood on its grid when rounded (see QuantizeW2Gptq).
absl::StatusOr<PackedContents> QuantizeModel(const Model& model, const QuantizeOptions& options,
                                             const CalibrationStats* stats,
                                             const std::function<void(const LayerReport&, int done, int total)>& on_layer,
                                             std::vector<std::vector<float>>* positions = nullptr);

}  // namespace accllm
