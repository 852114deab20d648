// accllm eval: perplexity with the compression steps switched on one at a time over fp32, then
// together in the served format, each scored in llama-perplexity's convention (the figures of
// docs/QUALITY.md); then the long-context curve (full attention against Λ) on a stretch of the
// text longer than the trained context.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/status_macros.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/eval/corpus.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/weight_variants.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/rotation.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/engine_flags.h"

namespace accllm::cli {
namespace {

struct EvalFlags {
  std::string model = "../shared/models/gutenberg30M";
  std::string tokenizer;
  std::string text = "../shared/data/gutenberg-dev.txt";
  std::string calibration = "../shared/data/gutenberg-calib.txt";
  std::string calibration_lines = "0:";
  std::string quantized;  // a packed file `accllm quantize` made from the same model
  ChunkedPerplexityOptions chunks{512, 100};
  int group_size = 128;
  int sinks = 4;
  int window = 128;
  int kivi_group = 64;
  int long_tokens = 4096;
  int bucket = 512;
  int threads = 0;
};

// One row of the table: the weights and the engine options that switch its steps on.
struct Variant {
  std::string name;
  std::string bits;  // bits per linear weight (or per cached value)
  std::function<EngineWeights()> weights;
  bool lambda = false;
  KvPrecision kv = KvPrecision::kF32;
  bool fake_a8 = false;
  bool kv4_rotation = true;
  int kivi_group = 0;
  bool kivi_exact_open_group = true;
  double quantize_s = -1;  // the time its weights took to make, when this command made them
};

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int RunEval(const EvalFlags& flags) {
  // Checked before minutes of quantizing: the KIVI row's engine needs an even group inside the window.
  if (flags.kivi_group % 2 != 0 || flags.kivi_group > flags.window) {
    return ReportError(absl::InvalidArgumentError(absl::StrCat("--kivi-group must be even and at most the window (",
                                                               flags.kivi_group, ", window ", flags.window, ")")));
  }
  const std::string model_path = ResolveModelPath(flags.model);
  absl::StatusOr<AnyModel> loaded = LoadAnyModel(model_path, LoadMode::kAnonymous);
  if (!loaded.ok()) return ReportError(loaded.status());
  if (!loaded->fp32) return ReportError(absl::InvalidArgumentError("eval starts from an fp32 model (it quantizes it itself)"));
  const Model& model = *loaded->fp32;
  const LlamaConfig& c = model.config;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(*loaded, flags.tokenizer);
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  const int bos = (*tokenizer)->bos_id();

  absl::StatusOr<AnyModel> quantized;
  if (!flags.quantized.empty()) {
    quantized = LoadAnyModel(flags.quantized, LoadMode::kAnonymous);
    if (!quantized.ok()) return ReportError(quantized.status());
    if (!quantized->packed) return ReportError(absl::InvalidArgumentError(absl::StrCat(flags.quantized, " is not a packed model")));
    if (quantized->config().dim != c.dim || quantized->config().n_layers != c.n_layers ||
        quantized->config().vocab_size != c.vocab_size) {
      return ReportError(absl::InvalidArgumentError(absl::StrCat(flags.quantized, " was not made from ", model_path)));
    }
  }
  absl::StatusOr<std::string> text = ReadTextFile(flags.text);
  if (!text.ok()) return ReportError(text.status());
  absl::StatusOr<std::vector<int>> tokens = (*tokenizer)->Encode(*text, /*add_bos=*/true);
  if (!tokens.ok()) return ReportError(tokens.status());
  if (static_cast<int64_t>(tokens->size()) < flags.chunks.context) {
    return ReportError(absl::InvalidArgumentError(
        absl::StrCat(flags.text, " has ", tokens->size(), " tokens, fewer than one chunk of ", flags.chunks.context)));
  }
  if (flags.chunks.context > c.max_seq_len) {
    std::fprintf(stderr, "warning: the model was trained on %d tokens of context, %d asked\n", c.max_seq_len,
                 flags.chunks.context);
  }
  absl::StatusOr<LineRange> lines = ParseLineRange(flags.calibration_lines);
  if (!lines.ok()) return ReportError(lines.status());
  absl::StatusOr<std::vector<std::vector<int>>> calibration = EncodeLines(flags.calibration, **tokenizer, *lines);
  if (!calibration.ok()) return ReportError(calibration.status());
  if (calibration->empty()) return ReportError(absl::InvalidArgumentError("no calibration lines selected"));
  for (auto& s : *calibration) {
    if (static_cast<int>(s.size()) > c.max_seq_len) s.resize(c.max_seq_len);
  }

  // The quantized variants this command makes: plain round-to-nearest, and the quick recipe
  // (rotated residual stream + GPTQ) dense and with 2:4 on the FFN layers.
  const auto start = std::chrono::steady_clock::now();
  QuantizeOptions options;
  options.group_size = flags.group_size;
  options.threads = flags.threads;
  options.method = QuantMethod::kRtn;
  absl::StatusOr<PackedContents> rtn = QuantizeModel(model, options, nullptr, nullptr);
  if (!rtn.ok()) return ReportError(rtn.status());
  const double rtn_s = SecondsSince(start);
  // As `accllm quantize` does: rotated where the width is a power of two.
  std::unique_ptr<Model> rotated_storage;
  if (IsPowerOfTwo(c.dim)) {
    absl::StatusOr<std::unique_ptr<Model>> r = RotateResidualStream(model, /*seed=*/1);
    if (!r.ok()) return ReportError(r.status());
    rotated_storage = *std::move(r);
  }
  const Model& rotated = rotated_storage ? *rotated_storage : model;
  std::fprintf(stderr, "calibrating on %zu lines of %s...\n", calibration->size(), flags.calibration.c_str());
  const auto calibration_start = std::chrono::steady_clock::now();
  absl::StatusOr<CalibrationStats> stats = Calibrate(rotated, *calibration, nullptr, flags.threads);
  if (!stats.ok()) return ReportError(stats.status());
  const double calibration_s = SecondsSince(calibration_start);
  options.method = QuantMethod::kGptq;
  const auto gptq_start = std::chrono::steady_clock::now();
  absl::StatusOr<PackedContents> gptq = QuantizeModel(rotated, options, &*stats, nullptr);
  if (!gptq.ok()) return ReportError(gptq.status());
  const double gptq_s = calibration_s + SecondsSince(gptq_start);
  options.prune = PruneMethod::kWanda;
  options.prune_layers = "ffn";
  const auto sparse_start = std::chrono::steady_clock::now();
  absl::StatusOr<PackedContents> sparse = QuantizeModel(rotated, options, &*stats, nullptr);
  if (!sparse.ok()) return ReportError(sparse.status());
  const double sparse_s = calibration_s + SecondsSince(sparse_start);

  const LambdaConfig lambda{flags.sinks, flags.window};
  const std::string w2_bits = absl::StrFormat("%.4g", 2.0 + 24.0 / flags.group_size);
  const std::string kv_bits = absl::StrFormat("%.4g", 4.0 + 32.0 / c.head_size());
  const std::string lambda_name = absl::StrCat("Λ (", flags.sinks, " sinks, window ", flags.window, ")");
  std::vector<Variant> variants = {
      {"fp32", "32", [&] { return EngineWeightsFromModel(model); }},
      {absl::StrCat("+", lambda_name), "32", [&] { return EngineWeightsFromModel(model); }, true},
      {"+A8 (every linear layer's input, per token)", "8 (activations)", [&] { return EngineWeightsFromModel(model); },
       false, KvPrecision::kF32, true},
      {"+KV4 per token, heads as they are", kv_bits + " (KV)", [&] { return EngineWeightsFromModel(model); }, false,
       KvPrecision::kKv4, false, false},
      {"+KV4 per token, Hadamard-rotated heads (served)", kv_bits + " (KV)", [&] { return EngineWeightsFromModel(model); },
       false, KvPrecision::kKv4},
      {absl::StrCat("+KV4 KIVI: keys per channel in groups of ", flags.kivi_group,
                    " tokens, values per token, the open group exact"),
       absl::StrFormat("%.4g (KV) + the open group", 4.0 + 32.0 / flags.kivi_group),
       [&] { return EngineWeightsFromModel(model); }, false, KvPrecision::kF32, false, false, flags.kivi_group},
      {absl::StrCat("+KV4 KIVI as above, the open group stored per token (no exact tokens)"),
       absl::StrFormat("%.4g (KV)", 4.0 + 32.0 / flags.kivi_group), [&] { return EngineWeightsFromModel(model); }, false,
       KvPrecision::kF32, false, false, flags.kivi_group, false},
      {absl::StrCat("+W2 round-to-nearest, group ", flags.group_size), w2_bits, [&] { return DequantizedWeights(*rtn); },
       false, KvPrecision::kF32, false, true, 0, true, rtn_s},
      {"+W2 rotated residual + GPTQ (`quantize --no-block-ap`)", w2_bits, [&] { return DequantizedWeights(*gptq); }, false,
       KvPrecision::kF32, false, true, 0, true, gptq_s},
      {"+W2 rotated residual + 2:4 (Wanda) on the FFN layers + GPTQ", w2_bits, [&] { return DequantizedWeights(*sparse); },
       false, KvPrecision::kF32, false, true, 0, true, sparse_s},
  };
  if (quantized.ok() && quantized->packed) {
    const std::string recipe = quantized->packed->metadata.count("quant_method") > 0
                                   ? quantized->packed->metadata.at("quant_method")
                                   : std::string("?");
    variants.push_back({absl::StrCat("+W2 from ", flags.quantized, " (", recipe, ")"), w2_bits,
                        [&] { return DequantizeW2Layers(quantized->packed->ToEngineWeights()); }});
  }
  variants.push_back({absl::StrCat("served, GPTQ: W2A8KV4 + ", lambda_name, " (integer kernels)"), w2_bits,
                      [&] { return PackedWeights(*gptq); }, true, KvPrecision::kKv4});
  if (quantized.ok() && quantized->packed) {
    variants.push_back({absl::StrCat("served, ", flags.quantized, ": W2A8KV4 + ", lambda_name, " (integer kernels)"),
                        w2_bits, [&] { return quantized->packed->ToEngineWeights(); }, true, KvPrecision::kKv4});
  }

  const auto engine_for = [&](const Variant& v, bool use_lambda, int64_t max_length) {
    CpuEngineOptions o;
    if (use_lambda) o.lambda = lambda;
    o.kv_precision = v.kv;
    o.fake_quantize_activations = v.fake_a8;
    o.kv4_rotation = v.kv4_rotation;
    o.kivi_group = v.kivi_group;
    o.kivi_exact_open_group = v.kivi_exact_open_group;
    // KIVI's groups must end where steps end (runtime/kv/kivi_simulation.h).
    o.max_step_tokens = v.kivi_group > 0 ? v.kivi_group : std::min(flags.chunks.context, 512);
    o.threads = flags.threads;
    o.kv_pages = SequenceKv::MaxPages(o.lambda, o.page_tokens, o.max_step_tokens, max_length) + 1;
    return CpuEngine::Create(v.weights(), o);
  };

  const int chunks = std::min<int64_t>(flags.chunks.chunks, static_cast<int64_t>(tokens->size()) / flags.chunks.context);
  std::printf("Perplexity of %s on %s, llama-perplexity's convention (%d chunks of %d, second halves scored); "
              "calibration: %zu lines of %s\n\n",
              model_path.c_str(), flags.text.c_str(), chunks, flags.chunks.context, calibration->size(),
              flags.calibration.c_str());
  std::printf("| variant | bits | quantize s | perplexity | ± | vs fp32 |\n|---|---|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  double baseline = 0;
  for (const Variant& v : variants) {
    const auto scoring = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<CpuEngine>> engine = engine_for(v, v.lambda, flags.chunks.context);
    if (!engine.ok()) return ReportError(engine.status());
    absl::StatusOr<ChunkedPerplexity> r = ScoreChunks(**engine, *tokens, bos, flags.chunks);
    if (!r.ok()) return ReportError(r.status());
    if (baseline == 0) baseline = r->perplexity();
    std::printf("| %s | %s | %s | %.3f | %.3f | %+.1f%% |\n", v.name.c_str(), v.bits.c_str(),
                v.quantize_s < 0 ? "" : absl::StrFormat("%.0f", v.quantize_s).c_str(), r->perplexity(),
                r->uncertainty(), 100.0 * (r->perplexity() / baseline - 1.0));
    std::fflush(stdout);
    std::fprintf(stderr, "%s: %.1f s\n", v.name.c_str(), SecondsSince(scoring));
  }
  if (flags.long_tokens <= 0) return 0;

  // The long sequence: the first long_tokens tokens of the text as one sequence.
  const int64_t long_length = std::min<int64_t>(flags.long_tokens, static_cast<int64_t>(tokens->size()));
  const std::span<const int> long_sequence(tokens->data(), static_cast<std::size_t>(long_length));
  std::printf("\nLong context: the first %lld tokens of the text as one sequence (trained context %d), "
              "perplexity per bucket of %d positions\n\n",
              static_cast<long long>(long_length), c.max_seq_len, flags.bucket);
  std::vector<std::pair<std::string, PerplexityResult>> curves;
  const Variant& served = *std::find_if(variants.rbegin(), variants.rend(),
                                        [](const Variant& v) { return v.name.rfind("served", 0) == 0; });
  for (const Variant* v : std::initializer_list<const Variant*>{&variants[0], &served}) {
    for (const bool use_lambda : {false, true}) {
      absl::StatusOr<std::unique_ptr<CpuEngine>> engine = engine_for(*v, use_lambda, long_length);
      if (!engine.ok()) return ReportError(engine.status());
      absl::StatusOr<PerplexityResult> r = Perplexity(**engine, long_sequence, flags.bucket);
      if (!r.ok()) return ReportError(r.status());
      curves.emplace_back(absl::StrCat(v == &served ? "served " : "fp32 ", use_lambda ? "Λ" : "full attention"), *r);
    }
  }
  std::printf("| positions |");
  for (const auto& [name, r] : curves) std::printf(" %s |", name.c_str());
  std::printf("\n|---|");
  for (std::size_t i = 0; i < curves.size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (std::size_t b = 0; b < curves[0].second.bucket_nll.size(); ++b) {
    std::printf("| %zu-%zu |", b * flags.bucket, (b + 1) * flags.bucket - 1);
    for (const auto& [name, r] : curves) std::printf(" %.3f |", r.bucket_perplexity(b));
    std::printf("\n");
  }
  return 0;
}

}  // namespace

void AddEvalCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Perplexity with each compression step switched on (llama-perplexity's convention), and the "
              "long-context curve");
  cmd->add_option("-m,--model", flags->model, "fp32 model")->capture_default_str();
  cmd->add_option("-t,--tokenizer", flags->tokenizer, "Tokenizer (default: beside the model)");
  cmd->add_option("-f,--file", flags->text, "Text to score (books the model never saw), read whole")->capture_default_str();
  cmd->add_option("--calibration", flags->calibration, "Calibration text for GPTQ and Wanda, one sample per line")
      ->capture_default_str();
  cmd->add_option("--calibration-lines", flags->calibration_lines, "Lines of the calibration text to use, A:B")
      ->capture_default_str();
  cmd->add_option("--quantized", flags->quantized,
                  "A packed model `accllm quantize` made from the same model (e.g. the default recipe): adds its rows");
  cmd->add_option("-c,--ctx-size", flags->chunks.context, "Tokens per chunk")->check(CLI::Range(4, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--chunks", flags->chunks.chunks, "Chunks to score per row")->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  cmd->add_option("--group-size", flags->group_size, "W2 group size")->capture_default_str();
  cmd->add_option("--sinks", flags->sinks, "Λ sink tokens")->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--window", flags->window, "Λ window")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--kivi-group", flags->kivi_group, "Tokens per KIVI key group (even)")->check(CLI::Range(2, 4096))
      ->capture_default_str();
  cmd->add_option("--long-tokens", flags->long_tokens, "Length of the long-context sequence; 0: no curve")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--bucket", flags->bucket, "Positions per bucket in the long-context curve")->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Worker threads; 0 = one per hardware thread");
  cmd->callback([flags, exit_code] { *exit_code = RunEval(*flags); });
}

}  // namespace accllm::cli
