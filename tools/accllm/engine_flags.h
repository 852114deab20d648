// Flags that choose and configure the engine a command runs on.
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/model/model.h"

namespace accllm::cli {

struct EngineFlags {
  std::string engine = "reference";  // reference | cpu
  std::string kv = "kv4";            // f32 | kv4
  int sinks = 4;
  int window = 0;                    // 0: full attention
  int threads = 0;
  int page_tokens = 16;
  int kv_pages = 0;
  bool fake_a8 = false;
};

void AddEngineOptions(CLI::App& cmd, EngineFlags& flags);

// The backend for `model` (which must outlive it).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const EngineFlags& flags, const Model& model);

}  // namespace accllm::cli
