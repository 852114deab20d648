// Subcommands of the `accllm` tool. Each registers itself on the app; its callback stores the
// process exit code in *exit_code.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"

namespace accllm::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddInspectCommand(CLI::App& app, int* exit_code);
void AddSynthCommand(CLI::App& app, int* exit_code);
void AddQuantizeCommand(CLI::App& app, int* exit_code);
void AddEvalCommand(CLI::App& app, int* exit_code);
void AddBenchCommand(CLI::App& app, int* exit_code);
void AddQuantizeBenchCommand(CLI::App& app, int* exit_code);
void AddClientCommand(CLI::App& app, int* exit_code);
void AddFpgaModelCommand(CLI::App& app, int* exit_code);
void AddPerplexityCommand(CLI::App& app, int* exit_code);
void AddRefineCommand(CLI::App& app, int* exit_code);

// The model to use: --model if given, else $ACCLLM_MODEL, else ../shared/models/stories260K.bin.
std::string ResolveModelPath(const std::string& flag_value);

// Prints "accllm: error: <status message>" to stderr and returns exit code 1.
int ReportError(const absl::Status& status);

}  // namespace accllm::cli
