// Opens any supported model: a Hugging Face checkpoint directory or a llama2.c .bin file.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"

namespace accllm {

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const LoadOptions& options = {});

// The tokenizer that belongs to a model when none is given: for a checkpoint directory its
// tokenizer.model; for a model file (llama2.c or packed) the first of tokenizer.bin,
// tokenizer.model, tok<vocab>.bin, tok<vocab>.model found beside it.
absl::StatusOr<std::string> DefaultTokenizerPath(const std::string& model_path, int vocab_size);

}  // namespace accllm
