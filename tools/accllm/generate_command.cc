// accllm generate: stream a completion from the reference engine.
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/generate/generator.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/engine_flags.h"

namespace accllm::cli {
namespace {

struct GenerateFlags {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  int max_new_tokens = 256;
  int context = 0;
  SamplingParams sampling{.temperature = 1.0f, .top_p = 0.9f};
  std::optional<uint64_t> seed;
  std::vector<std::string> stop_strings;
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  std::string output = "text";
  std::string load_mode = "mmap";
  BackendOptions engine;
};

// JSON with invalid UTF-8 replaced rather than throwing: streamed text is always valid UTF-8,
// but this keeps the CLI total.
std::string ToJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int RunGenerate(GenerateFlags flags) {
  const std::string model_path = ResolveModelPath(flags.model);
  const LoadMode mode = flags.load_mode == "anonymous" ? LoadMode::kAnonymous : LoadMode::kMap;
  absl::StatusOr<AnyModel> model = LoadAnyModel(model_path, mode);
  if (!model.ok()) return ReportError(model.status());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(*model, flags.tokenizer);
  if (!tokenizer.ok()) return ReportError(tokenizer.status());

  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeEngine(flags.engine, *model);
  if (!backend.ok()) return ReportError(backend.status());
  absl::StatusOr<std::unique_ptr<Generator>> generator = Generator::Create(**backend, **tokenizer, flags.context);
  if (!generator.ok()) return ReportError(generator.status());

  GenerationOptions options;
  options.sampling = flags.sampling;
  options.sampling.seed = flags.seed ? *flags.seed : std::random_device{}();
  options.max_new_tokens = flags.max_new_tokens;
  options.stop_strings = flags.stop_strings;
  options.stop_token_ids = flags.stop_token_ids;
  options.ignore_eos = flags.ignore_eos;

  if (flags.output == "text") {
    std::fputs(flags.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  const TokenCallback on_token = [&](int token, std::string_view text) {
    if (flags.output == "text") {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    } else if (flags.output == "jsonl") {
      std::printf("%s\n", ToJson({{"token", token}, {"text", std::string(text)}}).c_str());
      std::fflush(stdout);
    }
    return true;
  };
  absl::StatusOr<GenerationResult> result = (*generator)->Generate(flags.prompt, options, on_token);
  if (!result.ok()) return ReportError(result.status());

  if (flags.output == "text") {
    std::printf("\n");
  } else if (flags.output == "ids") {
    std::printf("%s %s\n", absl::StrJoin(result->prompt_ids, " ").c_str(),
                absl::StrJoin(result->generated_ids, " ").c_str());
  } else {
    std::printf("%s\n", ToJson({{"finish_reason", FinishReasonName(result->finish_reason)},
                                {"prompt_tokens", result->prompt_ids.size()},
                                {"generated_tokens", result->generated_ids.size()},
                                {"text", result->text}})
                            .c_str());
  }
  std::fflush(stdout);
  const double prompt_tps = result->prompt_ids.size() / std::max(result->prompt_seconds, 1e-9);
  const double gen_tps = result->generated_ids.size() / std::max(result->generate_seconds, 1e-9);
  std::fprintf(stderr,
               "prompt tokens: %zu (%.1f tokens/s), generated tokens: %zu (%.1f tokens/s), "
               "finish: %s, seed: %llu, model: %s (%s), engine: %s\n",
               result->prompt_ids.size(), prompt_tps, result->generated_ids.size(), gen_tps,
               FinishReasonName(result->finish_reason),
               static_cast<unsigned long long>(options.sampling.seed), model_path.c_str(),
               LoadModeName(mode), (*backend)->name().c_str());
  return 0;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt with the fp32 reference engine");
  cmd->add_option("-m,--model", flags->model,
                  "Model: llama2.c .bin file or Hugging Face checkpoint directory "
                  "(default: $ACCLLM_MODEL, else ../shared/models/stories260K.bin)");
  cmd->add_option("-t,--tokenizer", flags->tokenizer,
                  "Tokenizer: llama2.c tokenizer .bin or sentencepiece .model (default: found beside the model)");
  cmd->add_option("-p,--prompt", flags->prompt, "Prompt text (default: empty, i.e. start from BOS)");
  cmd->add_option("-n,--max-new-tokens", flags->max_new_tokens, "Maximum tokens to generate")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--context", flags->context,
                  "Most tokens in the sequence, prompt included (default: the model's trained length)")
      ->check(CLI::NonNegativeNumber);
  AddEngineOptions(*cmd, flags->engine);
  cmd->add_option("--temperature", flags->sampling.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", flags->sampling.top_k, "Keep the k most likely tokens; 0 = off")->capture_default_str();
  cmd->add_option("--top-p", flags->sampling.top_p, "Nucleus sampling mass; 1 = off")->capture_default_str();
  cmd->add_option("--min-p", flags->sampling.min_p, "Drop tokens below min-p x p(top token); 0 = off")->capture_default_str();
  cmd->add_option("--repetition-penalty", flags->sampling.repetition_penalty, "Penalty for recent tokens; 1 = off")
      ->capture_default_str();
  cmd->add_option("--seed", flags->seed, "Random seed (default: random, printed at the end)");
  cmd->add_option("--stop", flags->stop_strings, "Stop string (repeatable); output ends right before it");
  cmd->add_option("--stop-token", flags->stop_token_ids, "Stop token id (repeatable)");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating past EOS");
  cmd->add_option("--output", flags->output, "text: stream text; ids: the full id sequence on one line; jsonl: one JSON object per token")
      ->check(CLI::IsMember({"text", "ids", "jsonl"}))->capture_default_str();
  cmd->add_option("--load-mode", flags->load_mode, "mmap: map the weights; anonymous: read them into private memory")
      ->check(CLI::IsMember({"mmap", "anonymous"}))->capture_default_str();
  cmd->callback([flags, exit_code] { *exit_code = RunGenerate(*flags); });
}

}  // namespace accllm::cli
