// accllm: generate text, inspect models and synthesize weights from the command line.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tools/accllm/commands.h"

namespace accllm::cli {

std::string ResolveModelPath(const std::string& flag_value) {
  if (!flag_value.empty()) return flag_value;
  if (const char* env = std::getenv("ACCLLM_MODEL"); env != nullptr && *env != '\0') return env;
  return "../shared/models/stories260K.bin";
}

int ReportError(const absl::Status& status) {
  std::fprintf(stderr, "accllm: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace accllm::cli

int main(int argc, char** argv) {
  CLI::App app{"AccLLM Serve command-line tool: generate text, inspect models, synthesize weights"};
  app.set_version_flag("--version", std::string("accllm ") + ACCLLM_VERSION);
  app.require_subcommand(1);
  int exit_code = 0;
  accllm::cli::AddGenerateCommand(app, &exit_code);
  accllm::cli::AddInspectCommand(app, &exit_code);
  accllm::cli::AddSynthCommand(app, &exit_code);
  accllm::cli::AddQuantizeCommand(app, &exit_code);
  accllm::cli::AddRefineCommand(app, &exit_code);
  accllm::cli::AddEvalCommand(app, &exit_code);
  accllm::cli::AddPerplexityCommand(app, &exit_code);
  accllm::cli::AddBenchCommand(app, &exit_code);
  accllm::cli::AddQuantizeBenchCommand(app, &exit_code);
  accllm::cli::AddClientCommand(app, &exit_code);
  accllm::cli::AddFpgaModelCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
