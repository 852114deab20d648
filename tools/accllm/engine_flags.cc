#include "tools/accllm/engine_flags.h"

#include "runtime/cpu/cpu_engine.h"
#include "runtime/engine/engine_weights.h"
#include "runtime/reference/reference_backend.h"

namespace accllm::cli {

void AddEngineOptions(CLI::App& cmd, EngineFlags& flags) {
  cmd.add_option("--engine", flags.engine, "reference: the fp32 oracle; cpu: the CPU engine (paged KV, Λ attention)")
      ->check(CLI::IsMember({"reference", "cpu"}))->capture_default_str();
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

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const EngineFlags& flags, const Model& model) {
  if (flags.engine == "reference") {
    if (flags.window > 0) return absl::InvalidArgumentError("Λ attention (--window) needs --engine cpu");
    return std::make_unique<ReferenceBackend>(model);
  }
  CpuEngineOptions options;
  if (flags.window > 0) options.lambda = {flags.sinks, flags.window};
  options.kv_precision = flags.kv == "f32" ? KvPrecision::kF32 : KvPrecision::kKv4;
  options.threads = flags.threads;
  options.page_tokens = flags.page_tokens;
  options.kv_pages = flags.kv_pages;
  options.fake_quantize_activations = flags.fake_a8;
  absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(EngineWeightsFromModel(model), options);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Backend>(std::move(*engine));
}

}  // namespace accllm::cli
