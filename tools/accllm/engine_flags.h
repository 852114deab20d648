// The command-line flags that choose and configure the engine a command runs on.
#pragma once

#include "CLI/CLI.hpp"
#include "runtime/engine/backend_factory.h"

namespace accllm::cli {

void AddEngineOptions(CLI::App& cmd, BackendOptions& flags);
// The engine (device) the flags choose.
absl::StatusOr<std::unique_ptr<Backend>> MakeEngine(const BackendOptions& flags, const AnyModel& model);

}  // namespace accllm::cli
