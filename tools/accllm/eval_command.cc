// accllm eval: perplexity with the compression steps switched on one at a time, then together,
// and the long-context curve (full attention against Λ) on text longer than the trained context.
#include <algorithm>
#include <cstdio>
#include <functional>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/eval/corpus.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/weight_variants.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/quantize_model.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/engine_flags.h"

namespace accllm::cli {
namespace {

struct EvalFlags {
  std::string model;
  std::string tokenizer;
  std::string text = "../shared/data/tinystories-dev.txt";
  std::string calibration_lines = "0:6";
  std::string eval_lines = "6:";
  std::string long_lines = ":";
  int group_size = 128;
  int sinks = 4;
  int window = 0;  // 0: half the trained context
  int bucket = 256;
  int threads = 0;
};

struct Variant {
  std::string name;
  std::function<EngineWeights()> weights;
  bool lambda = false;
  KvPrecision kv = KvPrecision::kF32;
  bool fake_a8 = false;
  bool kv4_rotation = true;
};

// fp32 weights of `model` with each linear layer 2:4-pruned by Wanda (no quantization).
EngineWeights PrunedWeights(const Model& model, const CalibrationStats& stats, std::vector<std::vector<float>>& owned) {
  EngineWeights e = EngineWeightsFromModel(model);
  for (const TensorId& id : AllTensors(model.config)) {
    if (!IsLinear(id.kind)) continue;
    LinearWeights& slot = LinearOf(e.layers[id.layer], id.kind);
    const int64_t n = int64_t{slot.out} * slot.in;
    std::span<const float> w(slot.f32, static_cast<std::size_t>(n));
    const std::vector<uint8_t> keep = Select24(w, slot.out, slot.in, PruneMethod::kWanda, stats.For(id.layer, id.kind).ColumnNorms());
    owned.emplace_back(w.begin(), w.end());
    for (int64_t i = 0; i < n; ++i) {
      if (!keep[i]) owned.back()[i] = 0.0f;
    }
    slot.f32 = owned.back().data();
  }
  return e;
}

int RunEval(const EvalFlags& flags) {
  const std::string model_path = ResolveModelPath(flags.model);
  absl::StatusOr<AnyModel> loaded = LoadAnyModel(model_path, LoadMode::kMap);
  if (!loaded.ok()) return ReportError(loaded.status());
  if (!loaded->fp32) return ReportError(absl::InvalidArgumentError("eval starts from an fp32 model (it quantizes it itself)"));
  const Model& model = *loaded->fp32;
  const LlamaConfig& c = model.config;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(*loaded, flags.tokenizer);
  if (!tokenizer.ok()) return ReportError(tokenizer.status());

  absl::StatusOr<LineRange> calibration_lines = ParseLineRange(flags.calibration_lines);
  absl::StatusOr<LineRange> eval_lines = ParseLineRange(flags.eval_lines);
  absl::StatusOr<LineRange> long_lines = ParseLineRange(flags.long_lines);
  if (!calibration_lines.ok()) return ReportError(calibration_lines.status());
  if (!eval_lines.ok()) return ReportError(eval_lines.status());
  if (!long_lines.ok()) return ReportError(long_lines.status());
  absl::StatusOr<std::vector<std::vector<int>>> calibration = EncodeLines(flags.text, **tokenizer, *calibration_lines);
  absl::StatusOr<std::vector<std::vector<int>>> held_out = EncodeLines(flags.text, **tokenizer, *eval_lines);
  absl::StatusOr<std::vector<std::vector<int>>> all = EncodeLines(flags.text, **tokenizer);
  absl::StatusOr<std::vector<std::vector<int>>> long_stories = EncodeLines(flags.text, **tokenizer, *long_lines);
  if (!calibration.ok()) return ReportError(calibration.status());
  if (!held_out.ok()) return ReportError(held_out.status());
  if (!all.ok()) return ReportError(all.status());
  if (!long_stories.ok()) return ReportError(long_stories.status());
  for (auto* set : {&*calibration, &*held_out, &*all}) {
    for (auto& s : *set) {
      if (static_cast<int>(s.size()) > c.max_seq_len) s.resize(c.max_seq_len);
    }
  }

  std::fprintf(stderr, "calibrating on lines %s...\n", flags.calibration_lines.c_str());
  absl::StatusOr<CalibrationStats> stats = Calibrate(model, *calibration);
  if (!stats.ok()) return ReportError(stats.status());
  const auto quantize = [&](QuantMethod method, PruneMethod prune) -> absl::StatusOr<PackedContents> {
    QuantizeOptions options;
    options.group_size = flags.group_size;
    options.method = method;
    options.prune = prune;
    return QuantizeModel(model, options, &*stats, nullptr);
  };
  absl::StatusOr<PackedContents> rtn = quantize(QuantMethod::kRtn, PruneMethod::kNone);
  absl::StatusOr<PackedContents> gptq = quantize(QuantMethod::kGptq, PruneMethod::kNone);
  absl::StatusOr<PackedContents> sparse = quantize(QuantMethod::kGptq, PruneMethod::kWanda);
  for (const auto* p : {&rtn, &gptq, &sparse}) {
    if (!p->ok()) return ReportError(p->status());
  }
  std::vector<std::vector<float>> pruned_storage;
  const LambdaConfig lambda{flags.sinks, flags.window > 0 ? flags.window : c.max_seq_len / 2};

  const std::vector<Variant> variants = {
      {"fp32 (reference precision, full attention)", [&] { return EngineWeightsFromModel(model); }},
      {absl::StrCat("+Λ (sinks ", lambda.sinks, ", window ", lambda.window, ")"), [&] { return EngineWeightsFromModel(model); }, true},
      {"+W2 round-to-nearest", [&] { return DequantizedWeights(*rtn); }},
      {"+W2 GPTQ", [&] { return DequantizedWeights(*gptq); }},
      {"+2:4 Wanda (fp32 weights)", [&] { return PrunedWeights(model, *stats, pruned_storage); }},
      {"+2:4 Wanda + W2 GPTQ", [&] { return DequantizedWeights(*sparse); }},
      {"+A8", [&] { return EngineWeightsFromModel(model); }, false, KvPrecision::kF32, true},
      {"+KV4, heads as they are", [&] { return EngineWeightsFromModel(model); }, false, KvPrecision::kKv4, false, false},
      {"+KV4, Hadamard-rotated heads", [&] { return EngineWeightsFromModel(model); }, false, KvPrecision::kKv4},
      {"all, dense: Λ + W2 GPTQ + A8 + KV4 (integer kernels)", [&] { return PackedWeights(*gptq); }, true, KvPrecision::kKv4},
      {"all: Λ + 2:4 + W2 GPTQ + A8 + KV4 (integer kernels)", [&] { return PackedWeights(*sparse); }, true, KvPrecision::kKv4},
  };

  // The long sequence: the stories back to back, each starting with its BOS.
  std::vector<int> long_sequence;
  for (const auto& s : *long_stories) long_sequence.insert(long_sequence.end(), s.begin(), s.end());

  const auto engine_for = [&](const Variant& v, bool use_lambda, int64_t max_length) -> absl::StatusOr<std::unique_ptr<CpuEngine>> {
    CpuEngineOptions options;
    if (use_lambda) options.lambda = lambda;
    options.kv_precision = v.kv;
    options.fake_quantize_activations = v.fake_a8;
    options.kv4_rotation = v.kv4_rotation;
    options.threads = flags.threads;
    options.kv_pages = SequenceKv::MaxPages(options.lambda, options.page_tokens, 1, max_length) + 1;
    return CpuEngine::Create(v.weights(), options);
  };
  const auto score = [&](Backend& backend, const std::vector<std::vector<int>>& sequences) -> absl::StatusOr<PerplexityResult> {
    PerplexityResult total;
    for (const auto& s : sequences) {
      absl::StatusOr<PerplexityResult> r = Perplexity(backend, s, flags.bucket);
      if (!r.ok()) return r.status();
      total.Add(*r);
    }
    return total;
  };

  std::printf("Perplexity of %s on %s (%zu held-out stories, lines %s; %zu stories in all), group size %d\n\n",
              model_path.c_str(), flags.text.c_str(), held_out->size(), flags.eval_lines.c_str(), all->size(),
              flags.group_size);
  std::printf("| variant | held-out ppl | all ppl | held-out vs fp32 |\n|---|---:|---:|---:|\n");
  double baseline = 0;
  for (const Variant& v : variants) {
    absl::StatusOr<std::unique_ptr<CpuEngine>> engine = engine_for(v, v.lambda, c.max_seq_len);
    if (!engine.ok()) return ReportError(engine.status());
    absl::StatusOr<PerplexityResult> h = score(**engine, *held_out);
    absl::StatusOr<PerplexityResult> a = score(**engine, *all);
    if (!h.ok()) return ReportError(h.status());
    if (!a.ok()) return ReportError(a.status());
    if (baseline == 0) baseline = h->perplexity();
    std::printf("| %s | %.3f | %.3f | %+.1f%% |\n", v.name.c_str(), h->perplexity(), a->perplexity(),
                100.0 * (h->perplexity() / baseline - 1.0));
    std::fflush(stdout);
  }

  std::printf("\nLong context: %zu stories as one sequence of %zu tokens (trained context %d), "
              "perplexity per bucket of %d positions\n\n",
              long_stories->size(), long_sequence.size(), c.max_seq_len, flags.bucket);
  std::vector<std::pair<std::string, PerplexityResult>> curves;
  // fp32 and the whole W2A8KV4 model (the "all, dense" row), each with full attention and with Λ.
  const Variant& compressed = *std::find_if(variants.begin(), variants.end(),
                                            [](const Variant& v) { return v.name.rfind("all, dense", 0) == 0; });
  for (const auto& [v, use_lambda] : {std::pair{variants[0], false}, std::pair{variants[0], true},
                                      std::pair{compressed, false}, std::pair{compressed, true}}) {
    absl::StatusOr<std::unique_ptr<CpuEngine>> engine = engine_for(v, use_lambda, static_cast<int64_t>(long_sequence.size()));
    if (!engine.ok()) return ReportError(engine.status());
    absl::StatusOr<PerplexityResult> r = Perplexity(**engine, long_sequence, flags.bucket);
    if (!r.ok()) return ReportError(r.status());
    curves.emplace_back(absl::StrCat(v.lambda ? "W2A8KV4 " : "fp32 ", use_lambda ? "Λ" : "full attention"), *r);
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
  CLI::App* cmd = app.add_subcommand("eval", "Perplexity with each compression step switched on, and the long-context curve");
  cmd->add_option("-m,--model", flags->model, "fp32 model (default: $ACCLLM_MODEL, else ../shared/models/stories260K.bin)");
  cmd->add_option("-t,--tokenizer", flags->tokenizer, "Tokenizer (default: beside the model)");
  cmd->add_option("--text", flags->text, "Text to score, one document per line")->capture_default_str();
  cmd->add_option("--calibration-lines", flags->calibration_lines, "Lines used to calibrate GPTQ and Wanda")->capture_default_str();
  cmd->add_option("--eval-lines", flags->eval_lines, "Held-out lines to score")->capture_default_str();
  cmd->add_option("--long-lines", flags->long_lines, "Lines joined into the long-context sequence")->capture_default_str();
  cmd->add_option("--group-size", flags->group_size, "W2 group size")->capture_default_str();
  cmd->add_option("--sinks", flags->sinks, "Λ sink tokens")->capture_default_str();
  cmd->add_option("--window", flags->window, "Λ window; 0 = half the trained context")->capture_default_str();
  cmd->add_option("--bucket", flags->bucket, "Positions per bucket in the long-context curve")->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Worker threads; 0 = one per hardware thread");
  cmd->callback([flags, exit_code] { *exit_code = RunEval(*flags); });
}

}  // namespace accllm::cli
