// accllm quantize: compress a model into the packed W2A8KV4 format.
#include <algorithm>
#include <chrono>
#include <iterator>
#include <map>
#include <string>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"

#include "runtime/common/hadamard.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/layer_by_layer.h"
#include "runtime/quant/linalg.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/rotation.h"
#include "runtime/quant/train/block_ap.h"
#include "runtime/quant/train/end_to_end.h"
#include "tools/accllm/calibration_text.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/end_to_end_report.h"
#include "tools/accllm/heap_reuse.h"

namespace accllm::cli {
namespace {

struct QuantizeFlags {
  std::string model;
  std::string tokenizer;
  std::string output;
  int group_size = 128;
  std::string method = "gptq";
  std::string prune = "none";
  std::string prune_layers = "all";
  std::string calibration = "../shared/data/tinystories-dev.txt";
  std::string calibration_lines = "0:6";
  // The defaults are the best recipe measured (docs/QUALITY.md): rotated residual stream, GPTQ,
  // block-wise reconstruction; --no-rotate and --no-block-ap give the quick ones.
  bool rotate = true;
  bool rotate_given = false;  // asked for by name, not by default
  bool rotate_ffn = false;
  bool act_order = false;
  bool refit_scales = true;
  bool sequential = false;
  bool block_ap = true;
  bool block_ap_given = false;  // asked for by name, not by default
  bool block_ap_tuned = false;  // any --block-ap-* option given
  bool e2e_lr_given = false;
  bool layer_by_layer = false;
  BlockApOptions block_ap_options;
  EndToEndOptions e2e_options = {.epochs = 0};
  uint64_t rotation_seed = 1;
  int threads = 0;
};

QuantizeOptions QuantizeOptionsFrom(const QuantizeFlags& flags, const std::string& model_path) {
  QuantizeOptions options;
  options.group_size = flags.group_size;
  options.method = flags.method == "gptq" ? QuantMethod::kGptq : QuantMethod::kRtn;
  options.prune = flags.prune == "magnitude" ? PruneMethod::kMagnitude
                  : flags.prune == "wanda"   ? PruneMethod::kWanda
                                             : PruneMethod::kNone;
  options.prune_layers = flags.prune_layers;
  options.act_order = flags.act_order;
  options.refit_scales = flags.refit_scales;
  options.threads = flags.threads;
  options.source = model_path;
  return options;
}

void PrintLayerReport(const LayerReport& r, int done, int total) {
  std::fprintf(stderr, "%-44s %-6s %12.5f %12s   [%d/%d]\n", HfTensorName(r.id).c_str(), r.sparse ? "yes" : "no",
               r.weight_error, r.output_error < 0 ? "-" : std::to_string(r.output_error).c_str(), done, total);
}

void PrintBlockApReport(const BlockApReport& r) {
  std::fprintf(stderr, "%-6d %14.6g %14.6g %9.3f%% %8.1f   (epochs:", r.layer, r.error_before, r.error_after,
               100.0 * r.error_after / r.target_energy, r.seconds);
  for (double e : r.epoch_error) std::fprintf(stderr, " %.6g", e);
  std::fprintf(stderr, ")%s\n", r.kept_original ? "  no better: kept as quantized" : "");
}

std::string BlockApMethodSuffix(const BlockApOptions& options) {
  return absl::StrCat(" + block-ap (", options.epochs, " epochs", options.schedule == LrSchedule::kCosine ? ", cosine" : "", ")");
}

// --layer-by-layer: the weights read one layer at a time (QuantizeLayerByLayer), so the model's
// fp32 copy never has to fit in memory.
int RunQuantizeLayerByLayer(const QuantizeFlags& flags, const std::string& model_path) {
  if (flags.e2e_options.epochs > 0) {
    return ReportError(absl::InvalidArgumentError("--layer-by-layer cannot train end to end (that needs the whole model)"));
  }
  std::unique_ptr<Model> mapped;  // llama2.c files are used in place from their mapping
  std::unique_ptr<WeightSource> source;
  if (std::filesystem::is_directory(model_path)) {
    absl::StatusOr<std::unique_ptr<WeightSource>> hf = OpenHfWeightSource(model_path);
    if (!hf.ok()) return ReportError(hf.status());
    source = *std::move(hf);
  } else {
    absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(model_path);
    if (!model.ok()) return ReportError(model.status());
    mapped = *std::move(model);
    source = std::make_unique<ModelWeightSource>(*mapped);
  }
  const LlamaConfig& config = source->config();
  LayerByLayerOptions options;
  options.quantize = QuantizeOptionsFrom(flags, model_path);
  options.rotate = flags.rotate && (flags.rotate_given || IsPowerOfTwo(config.dim));
  if (flags.rotate && !options.rotate) {
    std::fprintf(stderr, "not rotating the residual stream: its width %d is not a power of two\n", config.dim);
  }
  if (flags.rotate_ffn && !options.rotate) {
    return ReportError(absl::InvalidArgumentError("--rotate-ffn needs a rotated residual stream"));
  }
  options.rotation_seed = flags.rotation_seed;
  options.ffn_block = flags.rotate_ffn ? FfnHadamardBlock(config) : 0;
  options.sequential = flags.sequential;
  options.block_ap = flags.block_ap && flags.method == "gptq";
  options.block_ap_options = flags.block_ap_options;
  options.block_ap_options.threads = flags.threads;
  if (options.block_ap && options.sequential) {
    return ReportError(absl::InvalidArgumentError("--layer-by-layer --sequential runs without block reconstruction (add --no-block-ap)"));
  }
  std::vector<std::vector<int>> calibration;
  if (options.quantize.method == QuantMethod::kGptq || options.quantize.prune == PruneMethod::kWanda) {
    absl::StatusOr<std::vector<std::vector<int>>> sequences = ReadCalibrationSequences(
        model_path, flags.tokenizer, config.vocab_size, flags.calibration, flags.calibration_lines, config.max_seq_len);
    if (!sequences.ok()) return ReportError(sequences.status());
    calibration = *std::move(sequences);
  }
  const auto start = std::chrono::steady_clock::now();
  if (options.block_ap) {
    std::fprintf(stderr, "block reconstruction after each layer's GPTQ: %d epochs over %zu sequences (--no-block-ap skips it)\n",
                 options.block_ap_options.epochs, calibration.size());
  }
  std::fprintf(stderr, "%-44s %-6s %12s %12s\n", "layer", "2:4", "weight err", "output err");
  LayerByLayerProgress progress;
  progress.on_linear = PrintLayerReport;
  progress.on_calibrated = [](int layer, double seconds) { std::fprintf(stderr, "layer %d: calibrated in %.1f s\n", layer, seconds); };
  progress.on_refined = PrintBlockApReport;
  absl::StatusOr<PackedContents> packed = QuantizeLayerByLayer(*source, calibration, options, progress);
  if (!packed.ok()) return ReportError(packed.status());
  std::fprintf(stderr, "quantized layer by layer in %.1f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (options.block_ap) packed->metadata["quant_method"] += BlockApMethodSuffix(options.block_ap_options);
  if (options.rotate) {
    packed->metadata["rotation"] = absl::StrCat("hadamard residual (seed ", flags.rotation_seed, "), ffn input blocks of ",
                                                packed->config.ffn_hadamard_block);
  }
  if (absl::Status s = WritePackedModel(*packed, flags.output); !s.ok()) return ReportError(s);
  std::fprintf(stderr, "wrote %s\n", flags.output.c_str());
  return 0;
}

int RunQuantize(const QuantizeFlags& flags) {
  ReuseFreedMemory();
  if (flags.rotate_ffn && !flags.rotate) return ReportError(absl::InvalidArgumentError("--rotate-ffn needs --rotate"));
  if (flags.act_order && flags.method != "gptq") return ReportError(absl::InvalidArgumentError("--act-order needs --method gptq"));
  if (flags.sequential && flags.method != "gptq") return ReportError(absl::InvalidArgumentError("--sequential needs --method gptq"));
  if (flags.block_ap_given && flags.method != "gptq") return ReportError(absl::InvalidArgumentError("--block-ap needs --method gptq"));
  const bool block_ap = flags.block_ap && flags.method == "gptq";
  if (flags.block_ap_tuned && !block_ap) {
    return ReportError(absl::InvalidArgumentError("--block-ap-* options tune block reconstruction, which runs only with "
                                                  "--method gptq and without --no-block-ap"));
  }
  if (flags.e2e_lr_given && flags.e2e_options.epochs == 0) {
    return ReportError(absl::InvalidArgumentError("--e2e-lr tunes end-to-end scale training, which runs only with --e2e-epochs N"));
  }
  if (flags.e2e_options.epochs > 0 && flags.method != "gptq") {
    return ReportError(absl::InvalidArgumentError("--e2e-epochs needs --method gptq (it trains on the calibration text)"));
  }
  if (!flags.refit_scales && flags.method != "gptq") {
    return ReportError(absl::InvalidArgumentError("--no-scale-refit needs --method gptq"));
  }
  std::fprintf(stderr, "products on %s\n", GemmLibrary().c_str());
  const std::string model_path = ResolveModelPath(flags.model);
  if (flags.layer_by_layer) return RunQuantizeLayerByLayer(flags, model_path);
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(model_path);
  if (!model.ok()) return ReportError(model.status());
  // Rotation by default only where the width allows it (a power of two); asked for, it must.
  const bool rotate = flags.rotate && (flags.rotate_given || IsPowerOfTwo((*model)->config.dim));
  if (flags.rotate && !rotate) {
    std::fprintf(stderr, "not rotating the residual stream: its width %d is not a power of two\n", (*model)->config.dim);
    if (flags.rotate_ffn) return ReportError(absl::InvalidArgumentError("--rotate-ffn needs a rotated residual stream"));
  }
  if (rotate) {
    model = RotateResidualStream(**model, flags.rotation_seed, flags.rotate_ffn ? FfnHadamardBlock((*model)->config) : 0);
    if (!model.ok()) return ReportError(model.status());
  }

  QuantizeOptions options = QuantizeOptionsFrom(flags, model_path);

  std::unique_ptr<CalibrationStats> stats;
  std::vector<std::vector<int>> calibration;
  if (options.method == QuantMethod::kGptq || options.prune == PruneMethod::kWanda) {
    absl::StatusOr<std::vector<std::vector<int>>> sequences =
        ReadCalibrationSequences(model_path, flags.tokenizer, (*model)->config.vocab_size, flags.calibration,
                                 flags.calibration_lines, (*model)->config.max_seq_len);
    if (!sequences.ok()) return ReportError(sequences.status());
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<CalibrationStats> calibrated = Calibrate(
        **model, *sequences, [](int done, int total) { std::fprintf(stderr, "\rcalibration %d/%d", done, total); },
        flags.threads);
    std::fprintf(stderr, " (%.1f s)", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    std::fprintf(stderr, "\n");
    if (!calibrated.ok()) return ReportError(calibrated.status());
    stats = std::make_unique<CalibrationStats>(std::move(*calibrated));
    calibration = *std::move(sequences);
  }
  if (flags.sequential) {
    options.recalibrate = [&](const Model& prefix) {
      std::fprintf(stderr, "calibrating layer %d on the quantized layers before it\n", prefix.config.n_layers - 1);
      return Calibrate(prefix, calibration, nullptr, flags.threads);
    };
  }

  const auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "%-44s %-6s %12s %12s\n", "layer", "2:4", "weight err", "output err");
  std::vector<std::vector<float>> positions;
  absl::StatusOr<PackedContents> packed = QuantizeModel(
      **model, options, stats.get(),
      PrintLayerReport,
      block_ap ? &positions : nullptr);
  if (!packed.ok()) return ReportError(packed.status());
  std::fprintf(stderr, "quantized in %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (block_ap) {
    BlockApOptions block_ap_options = flags.block_ap_options;
    block_ap_options.threads = flags.threads;
    std::fprintf(stderr, "block reconstruction: %d epochs over %zu sequences (--no-block-ap skips it)\n",
                 block_ap_options.epochs, calibration.size());
    std::fprintf(stderr, "%-6s %14s %14s %10s %8s\n", "layer", "error before", "error after", "of output", "seconds");
    const absl::Status refined = RefineBlocks(**model, calibration, block_ap_options, *packed, positions, PrintBlockApReport);
    if (!refined.ok()) return ReportError(refined);
    packed->metadata["quant_method"] += BlockApMethodSuffix(block_ap_options);
  }
  if (flags.e2e_options.epochs > 0) {
    EndToEndOptions e2e = flags.e2e_options;
    e2e.threads = flags.threads;
    std::fprintf(stderr, "end-to-end scale training: %d epochs over %zu sequences (--e2e-epochs 0 skips it)\n", e2e.epochs,
                 calibration.size());
    EndToEndReport report;
    if (absl::Status s = TrainScalesEndToEnd(**model, calibration, e2e, *packed, &report); !s.ok()) return ReportError(s);
    PrintEndToEndReport(report);
    if (!report.kept_original) packed->metadata["quant_method"] += absl::StrCat(" + e2e scales (", e2e.epochs, " epochs)");
  }
  if (rotate) {
    packed->metadata["rotation"] = absl::StrCat("hadamard residual (seed ", flags.rotation_seed, "), ffn input blocks of ",
                                                packed->config.ffn_hadamard_block);
  }
  if (absl::Status s = WritePackedModel(*packed, flags.output); !s.ok()) return ReportError(s);
  std::fprintf(stderr, "wrote %s\n", flags.output.c_str());
  return 0;
}

}  // namespace

void AddQuantizeCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Compress a model to the packed W2A8KV4 format (2-bit weights, optional 2:4)");
  cmd->add_option("-m,--model", flags->model, "Source model (default: $ACCLLM_MODEL, else ../shared/models/stories260K.bin)");
  cmd->add_option("-t,--tokenizer", flags->tokenizer, "Tokenizer for the calibration text (default: beside the model)");
  cmd->add_option("-o,--output", flags->output, "Packed model to write (.safetensors)")->required();
  cmd->add_option("--group-size", flags->group_size, "Weights per scale/zero group: 32, 64, 128, 256, ...")->capture_default_str();
  cmd->add_option("--method", flags->method, "rtn: round to nearest; gptq: error-compensated (needs calibration)")
      ->check(CLI::IsMember({"rtn", "gptq"}))->capture_default_str();
  cmd->add_option("--prune", flags->prune, "2:4 pruning: none, magnitude, or wanda (|w| * input norm; needs calibration)")
      ->check(CLI::IsMember({"none", "magnitude", "wanda"}))->capture_default_str();
  cmd->add_option("--prune-layers", flags->prune_layers, "Which layers to prune: all, attn, ffn, or indices 0,1,...")
      ->capture_default_str();
  cmd->add_option("--calibration", flags->calibration, "Calibration text, one sample per line")->capture_default_str();
  cmd->add_option("--calibration-lines", flags->calibration_lines, "Lines of the calibration text to use, A:B")
      ->capture_default_str();
  CLI::Option* rotate = cmd->add_flag(
      "--rotate,!--no-rotate", flags->rotate,
      "Rotate the residual stream first: a random-sign Hadamard folded into the weights (QuaRot/QuIP#). On by "
      "default where the model's width is a power of two");
  cmd->add_flag("--rotate-ffn", flags->rotate_ffn,
                "With --rotate: also the down projection's input, by an online block Hadamard (measured worse "
                "on gutenberg30M: docs/QUALITY.md)");
  cmd->add_flag("--act-order", flags->act_order,
                "GPTQ: quantize columns by decreasing input energy, group scales chosen up front");
  cmd->add_flag("--sequential", flags->sequential,
                "GPTQ: calibrate each layer on the model whose earlier layers are already quantized (slower: "
                "one more calibration pass per layer, each through the layers up to it)");
  cmd->add_flag("!--no-scale-refit", flags->refit_scales,
                "GPTQ: keep each group's scale as chosen, without refitting a row's scales to its output error");
  CLI::Option* block_ap = cmd->add_flag(
      "--block-ap,!--no-block-ap", flags->block_ap,
      "GPTQ, then train each layer's latent weights and scales so its output matches the fp32 layer's "
      "(block-wise reconstruction, EfficientQAT's Block-AP) on the calibration text. On by default with GPTQ; "
      "the slow step (gutenberg30M: ~12 of 14 minutes on 2 cores)");
  const CLI::Option* tuning[] = {
    cmd->add_option("--block-ap-epochs", flags->block_ap_options.epochs, "Block reconstruction: passes over the calibration text")
        ->check(CLI::PositiveNumber)->capture_default_str(),
    cmd->add_option("--block-ap-batch", flags->block_ap_options.batch_sequences, "Block reconstruction: sequences per step")
        ->check(CLI::PositiveNumber)->capture_default_str(),
    cmd->add_option("--block-ap-weight-lr", flags->block_ap_options.adam.weight_lr, "Block reconstruction: Adam step for latent weights")
        ->check(CLI::PositiveNumber)->capture_default_str(),
    cmd->add_option("--block-ap-scale-lr", flags->block_ap_options.adam.scale_lr, "Block reconstruction: Adam step for group scales")
        ->check(CLI::PositiveNumber)->capture_default_str(),
    cmd->add_option("--block-ap-norm-lr", flags->block_ap_options.adam.norm_lr,
                    "Block reconstruction: Adam step for the layers' norm gains (0: not trained)")
        ->check(CLI::NonNegativeNumber)->capture_default_str(),
    cmd->add_option("--block-ap-schedule", flags->block_ap_options.schedule,
                    "Block reconstruction: Adam steps kept constant, or decayed to zero along half a cosine over each layer's training (default)")
        ->transform(CLI::CheckedTransformer(std::map<std::string, LrSchedule>{{"constant", LrSchedule::kConstant}, {"cosine", LrSchedule::kCosine}}, CLI::ignore_case))};
  cmd->add_option("--e2e-epochs", flags->e2e_options.epochs,
                  "Last, train every group scale end to end so the model's next-token "
                  "distributions match the fp32 model's (EfficientQAT's E2E-QP, distilled); 0 skips it")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  CLI::Option* e2e_lr = cmd->add_option("--e2e-lr", flags->e2e_options.scale_lr, "End-to-end scale training: Adam step (decayed along a cosine)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_flag("--layer-by-layer", flags->layer_by_layer,
                "Read and quantize one layer at a time: memory for one layer in fp32 and the calibration tokens' hidden "
                "states, not the whole model (Llama-2-7B: 27 GB in fp32). The same recipe, without end-to-end training");
  cmd->add_option("--rotation-seed", flags->rotation_seed, "Seed of the rotation's random signs")->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Threads for calibration and GPTQ; 0 = one per hardware thread")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([flags, exit_code, rotate, block_ap, tuning, e2e_lr] {
    flags->e2e_lr_given = e2e_lr->count() > 0;
    // Asked for by name (not by default, nor turned off with --no-...).
    flags->rotate_given = rotate->count() > 0 && flags->rotate;
    flags->block_ap_given = block_ap->count() > 0 && flags->block_ap;
    flags->block_ap_tuned = std::any_of(std::begin(tuning), std::end(tuning), [](const CLI::Option* o) { return o->count() > 0; });
    *exit_code = RunQuantize(*flags);
  });
}

}  // namespace accllm::cli
