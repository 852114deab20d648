#include "tools/accllm/engine_flags.h"

#include "runtime/cpu/cpu_engine.h"
#include "runtime/engine/engine_weights.h"
#include "runtime/model/load_model.h"
#include "runtime/reference/reference_backend.h"

namespace accllm::cli {

void AddEngineOptions(CLI::App& cmd, EngineFlags& flags) {
  cmd.add_option("--engine", flags.engine,
                 "reference: the fp32 oracle; cpu: the CPU engine (paged KV, Λ attention). "
                 "Default: cpu for packed models, reference otherwise")
      ->check(CLI::IsMember({"reference", "cpu"}));
  cmd.add_option("--kv", flags.kv, "KV cache precision for --engine cpu")
      ->check(CLI::IsMember({"f32", "kv4"}))->capture_default_str();
  cmd.add_option("--sinks", flags.sinks, "Λ attention: sink tokens every query sees")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--window", flags.window, "Λ attention: recent tokens every query sees; 0 = full attention")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd.add_option("--threads", flags.threads, "Worker threads; 0 = one per hardware thread")->check(CLI::NonNegativeNumber);
  cmd.add_option("--page-tokens", flags.page_tokens, "Tokens per KV page")->check(CLI::PositiveNumber)->capture_default_str();
  cmd.add_option("--kv-pages", flags.kv_pages, "KV pages in the pool; 0 = enough for one full-length sequence")
      ->check(CLI::NonNegativeNumber);
  cmd.add_flag("--fake-a8", flags.fake_a8, "Round fp32 layers' inputs through int8 (quality experiments)");
}

absl::StatusOr<AnyModel> LoadAnyModel(const std::string& path, LoadMode mode) {
  AnyModel m;
  m.path = path;
  if (IsPackedModelFile(path)) {
    absl::StatusOr<std::unique_ptr<PackedModel>> packed = LoadPackedModel(path, mode);
    if (!packed.ok()) return packed.status();
    m.packed = std::move(*packed);
  } else {
    absl::StatusOr<std::unique_ptr<Model>> fp32 = LoadModel(path, {.mode = mode});
    if (!fp32.ok()) return fp32.status();
    m.fp32 = std::move(*fp32);
  }
  return m;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const AnyModel& model, const std::string& flag_value) {
  std::string path = flag_value;
  if (path.empty()) {
    absl::StatusOr<std::string> found = DefaultTokenizerPath(model.path, model.config().vocab_size);
    if (!found.ok()) return found.status();
    path = *found;
  }
  return LoadTokenizer(path);
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const EngineFlags& flags, const AnyModel& model) {
  const std::string engine = !flags.engine.empty() ? flags.engine : model.packed ? "cpu" : "reference";
  if (engine == "reference") {
    if (model.packed) return absl::InvalidArgumentError("the reference engine runs fp32 models; use --engine cpu");
    if (flags.window > 0) return absl::InvalidArgumentError("Λ attention (--window) needs --engine cpu");
    return std::make_unique<ReferenceBackend>(*model.fp32);
  }
  CpuEngineOptions options;
  if (flags.window > 0) options.lambda = {flags.sinks, flags.window};
  options.kv_precision = flags.kv == "f32" ? KvPrecision::kF32 : KvPrecision::kKv4;
  options.threads = flags.threads;
  options.page_tokens = flags.page_tokens;
  options.kv_pages = flags.kv_pages;
  options.fake_quantize_activations = flags.fake_a8;
  EngineWeights weights = model.packed ? model.packed->ToEngineWeights() : EngineWeightsFromModel(*model.fp32);
  absl::StatusOr<std::unique_ptr<CpuEngine>> cpu = CpuEngine::Create(std::move(weights), options);
  if (!cpu.ok()) return cpu.status();
  return std::unique_ptr<Backend>(std::move(*cpu));
}

}  // namespace accllm::cli
