// accllm-server's command line and config file (TOML/INI, any long option as `key = value`),
// parsed with CLI11 into the server's options and checked (ValidateServerOptions). The binary and
// the config-file fuzzer share it.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "server/server.h"

namespace accllm::server {

struct ServerFlags {
  ServerOptions options;
  double grace = 30;
  std::string fallback = "when-full";
  std::string log_level = "info";
};

// Declares every option on `app`, bound to `flags`.
void AddServerFlags(CLI::App& app, ServerFlags& flags);

// Parses `args` (without the program name) and checks the result. --help and --version are not
// handled here (the binary lets CLI11 print them). INVALID_ARGUMENT with CLI11's message, or the
// first bad option.
absl::StatusOr<ServerFlags> ParseServerFlags(std::vector<std::string> args);

}  // namespace accllm::server
