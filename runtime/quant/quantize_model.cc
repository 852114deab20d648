#include "runtime/quant/quantize_model.h"

#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "runtime/common/half.h"
#include "runtime/common/status_macros.h"
#include "runtime/quant/gptq.h"
#include "runtime/quant/linalg.h"

namespace accllm {
namespace {

// `model` as layer `layer` of its quantized form sees it: the linear layers before it
// dequantized from `done`, the layers after it left out (their weights are not read).
absl::StatusOr<Model> PrefixModel(const Model& model, const std::vector<std::pair<TensorId, W2Matrix>>& done, int layer) {
  Model prefix;
  prefix.format = model.format;
  prefix.path = model.path;
  prefix.config = model.config;
  prefix.config.n_layers = layer + 1;
  prefix.weights = model.weights;
  prefix.weights.layers.resize(static_cast<std::size_t>(layer) + 1);
  prefix.storage = model.storage;
  for (const auto& [id, m] : done) {
    if (id.layer >= layer) continue;
    const int rows = m.shape.rows, cols = m.shape.cols;
    float* dequantized = prefix.AllocateOwned(int64_t{rows} * cols);
    if (dequantized == nullptr) return absl::ResourceExhaustedError("out of memory for the dequantized layers");
    for (int r = 0; r < rows; ++r) DequantizeW2Row(m.view(), r, std::span<float>(dequantized + int64_t{r} * cols, cols));
    prefix.SetTensor(id, dequantized);
  }
  return prefix;
}

}  // namespace

absl::StatusOr<std::function<bool(const TensorId&)>> ParseLayerSelection(const std::string& spec, int n_layers) {
  if (spec == "all") return std::function<bool(const TensorId&)>([](const TensorId&) { return true; });
  if (spec == "attn") return std::function<bool(const TensorId&)>([](const TensorId& id) { return GroupOf(id.kind) == TensorGroup::kAttention; });
  if (spec == "ffn") return std::function<bool(const TensorId&)>([](const TensorId& id) { return GroupOf(id.kind) == TensorGroup::kFfn; });
  std::set<int> layers;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    int layer = -1;
    if (!absl::SimpleAtoi(part, &layer) || layer < 0 || layer >= n_layers) {
      return absl::InvalidArgumentError(absl::StrCat("bad layer selection '", spec,
                                                     "': use all, attn, ffn or layer indices below ", n_layers));
    }
    layers.insert(layer);
  }
  if (layers.empty()) return absl::InvalidArgumentError("empty layer selection");
  return std::function<bool(const TensorId&)>([layers](const TensorId& id) { return layers.contains(id.layer); });
}

absl::StatusOr<std::unique_ptr<LinearQuantizer>> LinearQuantizer::Create(const LlamaConfig& config,
                                                                        const QuantizeOptions& options) {
  ASSIGN_OR_RETURN(auto prune_selected, ParseLayerSelection(options.prune_layers, config.n_layers));
  if (options.prune != PruneMethod::kNone && (config.dim % 4 != 0 || config.hidden_dim % 4 != 0)) {
    return absl::InvalidArgumentError("2:4 pruning needs layer widths divisible by 4");
  }
  return std::unique_ptr<LinearQuantizer>(new LinearQuantizer(config, options, std::move(prune_selected)));
}

LinearQuantizer::LinearQuantizer(const LlamaConfig& config, const QuantizeOptions& options,
                                 std::function<bool(const TensorId&)> prune_selected)
    : config_(config),
      options_(options),
      prune_selected_(std::move(prune_selected)),
      pool_(options.threads),
      factorization_threads_(options.threads) {}

absl::StatusOr<W2Matrix> LinearQuantizer::Quantize(const TensorId& id, std::span<const float> w, const InputStats* input,
                                                   std::span<float> positions, LayerReport* report) {
  const std::vector<int64_t> dims = TensorShape(config_, id.kind);
  const int rows = static_cast<int>(dims[0]), cols = static_cast<int>(dims[1]);
  const bool gptq = options_.method == QuantMethod::kGptq;
  if ((gptq || options_.prune == PruneMethod::kWanda) && input == nullptr) {
    return absl::InvalidArgumentError("GPTQ and Wanda need calibration data");
  }
  const bool sparse = options_.prune != PruneMethod::kNone && prune_selected_(id);
  std::vector<uint8_t> keep;
  if (sparse) {
    keep = Select24(w, rows, cols, options_.prune,
                    options_.prune == PruneMethod::kWanda ? input->ColumnNorms() : std::vector<float>{});
  }
  const W2Shape shape{rows, cols, options_.group_size, sparse};
  W2Matrix m(shape);
  double output_error = -1;  // the refit's by-product, when it runs
  if (gptq) {
    if (hessian_layer_ != id.layer) hessians_.clear();  // q/k/v and gate/up share one within a layer
    hessian_layer_ = id.layer;
    auto it = hessians_.find(input);
    if (it == hessians_.end()) {
      GptqOptions gptq_options;
      gptq_options.act_order = options_.act_order;
      gptq_options.refit_scales = options_.refit_scales;
      ASSIGN_OR_RETURN(GptqHessian h, PrepareGptqHessian(input->gram, input->cols, gptq_options));
      it = hessians_.emplace(input, std::move(h)).first;
    }
    ASSIGN_OR_RETURN(m, QuantizeW2Gptq(w, shape, it->second, keep, &pool_, positions, &output_error));
  } else {
    ASSIGN_OR_RETURN(m, QuantizeW2(w, shape, keep));
  }
  *report = LayerReport{id, sparse};
  std::vector<float> row(cols);
  double err = 0, ref = 0;
  for (int r = 0; r < rows; ++r) {
    DequantizeW2Row(m.view(), r, row);
    for (int j = 0; j < cols; ++j) {
      const double wv = w[static_cast<std::size_t>(r) * cols + j];
      err += (wv - row[j]) * (wv - row[j]);
      ref += wv * wv;
    }
  }
  report->weight_error = ref > 0 ? err / ref : 0;
  if (output_error >= 0) {
    report->output_error = output_error;
  } else if (input != nullptr) {
    report->output_error = RelativeOutputError(w, m.view(), input->gram, &pool_);
  }
  return m;
}

void SetPackedMetadata(const QuantizeOptions& options, PackedContents& out) {
  out.metadata["quant_method"] = options.method == QuantMethod::kRtn ? "rtn" : options.act_order ? "gptq act-order" : "gptq";
  out.metadata["prune_method"] = options.prune == PruneMethod::kNone        ? "none"
                                 : options.prune == PruneMethod::kMagnitude ? "magnitude"
                                                                            : "wanda";
  out.metadata["prune_layers"] = options.prune == PruneMethod::kNone ? "" : options.prune_layers;
  out.metadata["source_model"] = options.source;
  out.metadata["tool"] = "accllm quantize 0.1.0";
  out.metadata["embedding_precision"] = "F16";
  out.metadata["classifier_precision"] = "F16";
  out.metadata["norm_precision"] = "F32";
}

absl::StatusOr<PackedContents> QuantizeModel(const Model& model, const QuantizeOptions& options,
                                             const CalibrationStats* stats,
                                             const std::function<void(const LayerReport&, int, int)>& on_layer,
                                             std::vector<std::vector<float>>* positions) {
  const LlamaConfig& c = model.config;
  const bool needs_stats = options.method == QuantMethod::kGptq || options.prune == PruneMethod::kWanda;
  if (needs_stats && stats == nullptr) return absl::InvalidArgumentError("GPTQ and Wanda need calibration data");
  if (positions != nullptr && options.method != QuantMethod::kGptq) return absl::InvalidArgumentError("grid positions come from GPTQ");
  if (positions != nullptr) positions->clear();
  ASSIGN_OR_RETURN(std::unique_ptr<LinearQuantizer> quantizer, LinearQuantizer::Create(c, options));

  PackedContents out;
  out.config = c;
  const int64_t table = int64_t{c.vocab_size} * c.dim;
  out.embedding = FloatsToFp16({model.weights.token_embedding, static_cast<std::size_t>(table)});
  if (!c.shared_classifier) out.classifier = FloatsToFp16({model.weights.classifier, static_cast<std::size_t>(table)});
  for (const LayerWeights& lw : model.weights.layers) {
    out.norms.emplace_back(lw.rms_att, lw.rms_att + c.dim);
    out.norms.emplace_back(lw.rms_ffn, lw.rms_ffn + c.dim);
  }
  out.norms.emplace_back(model.weights.rms_final, model.weights.rms_final + c.dim);

  std::vector<TensorId> linears;
  for (const TensorId& id : AllTensors(c)) {
    if (IsLinear(id.kind)) linears.push_back(id);
  }
  CalibrationStats layer_stats;  // sequential: the current layer's, from the partly quantized model
  const CalibrationStats* current = stats;
  int stats_layer = 0;
  for (std::size_t i = 0; i < linears.size(); ++i) {
    const TensorId& id = linears[i];
    if (options.recalibrate && stats != nullptr && id.layer != stats_layer) {
      ASSIGN_OR_RETURN(const Model prefix, PrefixModel(model, out.linears, id.layer));
      ASSIGN_OR_RETURN(layer_stats, options.recalibrate(prefix));
      current = &layer_stats;
      stats_layer = id.layer;
    }
    const std::span<const float> w(model.Tensor(id), static_cast<std::size_t>(TensorElements(c, id.kind)));
    std::span<float> layer_positions;
    if (positions != nullptr) layer_positions = positions->emplace_back(w.size());
    LayerReport report;
    ASSIGN_OR_RETURN(W2Matrix m, quantizer->Quantize(id, w, current != nullptr ? &current->For(id.layer, id.kind) : nullptr,
                                                     layer_positions, &report));
    out.linears.emplace_back(id, std::move(m));
    if (on_layer) on_layer(report, static_cast<int>(i + 1), static_cast<int>(linears.size()));
  }
  SetPackedMetadata(options, out);
  return out;
}

}  // namespace accllm
