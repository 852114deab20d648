// The command-line flags that choose and configure the engine a command runs on.
#pragma once

#include "CLI/CLI.hpp"
#include "runtime/engine/backend_factory.h"

namespace accllm::cli {

void AddEngineOptions(CLI::App& cmd, BackendOptions& flags);

}  // namespace accllm::cli
