// llama2.c checkpoints (karpathy/llama2.c export.py): the legacy header-less-magic format and
// the versioned "ak42" format, version 1 (fp32).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"

namespace accllm {

enum class Llama2cVersion { kLegacy, kV1 };

// True if the file starts with the "ak42" magic of the versioned format.
bool HasLlama2cMagic(std::span<const std::byte> bytes);

absl::StatusOr<std::unique_ptr<Model>> LoadLlama2cModel(const std::string& path, const LoadOptions& options);

absl::Status WriteLlama2cModel(const WeightSource& source, const std::string& path,
                               Llama2cVersion version);

}  // namespace accllm
