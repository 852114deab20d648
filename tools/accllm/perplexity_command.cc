// accllm perplexity: a model's perplexity on a text, scored exactly as llama.cpp's
// `llama-perplexity` scores it (runtime/eval/perplexity.h), so figures compare across tools.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "runtime/engine/backend_factory.h"
#include "runtime/eval/corpus.h"
#include "runtime/eval/perplexity.h"
#include "runtime/model/load_model.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/engine_flags.h"

namespace accllm::cli {
namespace {

struct PerplexityFlags {
  std::string model;
  std::string tokenizer;
  std::string text;
  ChunkedPerplexityOptions chunks;
  BackendOptions engine;
};

int RunPerplexity(PerplexityFlags flags) {
  absl::StatusOr<AnyModel> model = LoadAnyModel(ResolveModelPath(flags.model), LoadMode::kAnonymous);
  if (!model.ok()) return ReportError(model.status());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(*model, flags.tokenizer);
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  absl::StatusOr<std::string> text = ReadTextFile(flags.text);
  if (!text.ok()) return ReportError(text.status());

  // A chunk is one sequence: the KV pool holds exactly one, whatever the trained context.
  if (flags.engine.engine.empty()) flags.engine.engine = "cpu";
  if (flags.engine.kv.empty()) flags.engine.kv = model->packed ? "kv4" : "f32";
  if (flags.engine.kv_pages == 0) {
    flags.engine.kv_pages = (flags.chunks.context + flags.engine.page_tokens - 1) / flags.engine.page_tokens + 1;
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeEngine(flags.engine, *model);
  if (!backend.ok()) return ReportError(backend.status());

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<int>> tokens = (*tokenizer)->Encode(*text, /*add_bos=*/true);
  if (!tokens.ok()) return ReportError(tokens.status());
  const double tokenize_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "%s: %zu tokens (tokenized in %.2f s); %s\n", flags.text.c_str(), tokens->size(), tokenize_s,
               (*backend)->name().c_str());
  if (flags.chunks.context > (*backend)->config().max_seq_len) {
    std::fprintf(stderr, "warning: the model was trained on %d tokens of context, %d asked\n",
                 (*backend)->config().max_seq_len, flags.chunks.context);
  }

  const auto scoring = std::chrono::steady_clock::now();
  absl::StatusOr<ChunkedPerplexity> result = ScoreChunks(
      **backend, *tokens, (*tokenizer)->bos_id(), flags.chunks, [&](int done, int total, const ChunkedPerplexity& so_far) {
        std::printf("[%d]%.4f,", done, so_far.perplexity());
        std::fflush(stdout);
        if (done == 1 || done == total) {
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - scoring).count();
          std::fprintf(stderr, "\n%d/%d chunks, %.1f s, %.0f tokens/s\n", done, total, s,
                       done * flags.chunks.context / s);
        }
      });
  if (!result.ok()) return ReportError(result.status());
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f  (%d chunks of %d, %lld scored tokens)\n", result->perplexity(),
              result->uncertainty(), result->chunks, flags.chunks.context, static_cast<long long>(result->count));
  return 0;
}

}  // namespace

void AddPerplexityCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<PerplexityFlags>();
  flags->engine.kv = "";  // chosen below from the model unless given
  CLI::App* cmd = app.add_subcommand(
      "perplexity", "Perplexity on a text in llama-perplexity's convention (chunks with BOS, second half scored)");
  cmd->add_option("-m,--model", flags->model, "Model: fp32/fp16 Hugging Face, llama2.c, or packed W2A8KV4");
  cmd->add_option("-t,--tokenizer", flags->tokenizer, "Tokenizer (default: beside the model)");
  cmd->add_option("-f,--file", flags->text, "Text to score, read whole")->required();
  cmd->add_option("-c,--ctx-size", flags->chunks.context, "Tokens per chunk")->check(CLI::Range(4, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--chunks", flags->chunks.chunks, "Chunks to score; -1: all")->check(CLI::Range(-1, 1 << 30))
      ->capture_default_str();
  AddEngineOptions(*cmd, flags->engine);
  cmd->callback([flags, exit_code] {
    PerplexityFlags run = *flags;
    run.engine.max_step_tokens = std::min(run.chunks.context, 512);
    *exit_code = RunPerplexity(std::move(run));
  });
}

}  // namespace accllm::cli
