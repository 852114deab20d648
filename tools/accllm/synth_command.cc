// accllm synth: write a model of any LLaMA shape with deterministic random weights.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/llama2c_format.h"
#include "runtime/model/synthesize.h"
#include "tools/accllm/commands.h"

namespace accllm::cli {
namespace {

struct SynthFlags {
  std::string shape;
  std::string output;
  uint64_t seed = 0;
  std::string format = "llama2c";
  std::string dtype = "f32";
  uint64_t shard_mb = 0;
};

int RunSynth(const SynthFlags& flags) {
  absl::StatusOr<LlamaConfig> config = ParseShape(flags.shape);
  if (!config.ok()) return ReportError(config.status());
  const SyntheticWeights weights(*config, flags.seed);
  const auto start = std::chrono::steady_clock::now();
  absl::Status status;
  if (flags.format == "hf") {
    std::error_code ec;
    std::filesystem::create_directories(flags.output, ec);
    if (ec) return ReportError(absl::FailedPreconditionError(flags.output + ": " + ec.message()));
    HfWriteOptions options;
    options.dtype = flags.dtype == "f16" ? DType::kF16 : flags.dtype == "bf16" ? DType::kBF16 : DType::kF32;
    options.max_shard_bytes = flags.shard_mb << 20;
    status = WriteHfCheckpoint(weights, flags.output, options);
  } else {
    if (flags.dtype != "f32") return ReportError(absl::InvalidArgumentError("llama2.c files are fp32; use --format hf for f16/bf16"));
    status = WriteLlama2cModel(weights, flags.output,
                               flags.format == "llama2c-legacy" ? Llama2cVersion::kLegacy : Llama2cVersion::kV1);
  }
  if (!status.ok()) return ReportError(status);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "wrote %s: %lld parameters, shape dim %d ffn %d layers %d heads %d kv_heads %d vocab %d, %.1f s\n",
               flags.output.c_str(), static_cast<long long>(ParameterCount(*config)), config->dim,
               config->hidden_dim, config->n_layers, config->n_heads, config->n_kv_heads,
               config->vocab_size, seconds);
  return 0;
}

}  // namespace

void AddSynthCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<SynthFlags>();
  CLI::App* cmd = app.add_subcommand("synth", "Write a model of any LLaMA shape with seeded random weights");
  cmd->add_option("--shape", flags->shape,
                  "llama2-7b, llama2-13b, tinyllama-1.1b, or dim=N,ffn=N,layers=N,heads=N[,kv_heads=N][,vocab=N][,seq=N]")
      ->required();
  cmd->add_option("-o,--output", flags->output, "Output file (llama2c formats) or directory (hf)")->required();
  cmd->add_option("--seed", flags->seed, "Seed for the weights")->capture_default_str();
  cmd->add_option("--format", flags->format, "llama2c (ak42 v1), llama2c-legacy, or hf (safetensors checkpoint)")
      ->check(CLI::IsMember({"llama2c", "llama2c-legacy", "hf"}))->capture_default_str();
  cmd->add_option("--dtype", flags->dtype, "Weight dtype for --format hf")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))->capture_default_str();
  cmd->add_option("--shard-mb", flags->shard_mb, "Split hf checkpoints into shards of at most this many MiB; 0 = one file")
      ->capture_default_str();
  cmd->callback([flags, exit_code] { *exit_code = RunSynth(*flags); });
}

}  // namespace accllm::cli
