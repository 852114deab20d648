// Hugging Face LLaMA checkpoints: a directory with config.json, one or more *.safetensors files
// (F32, F16 or BF16; sharded ones listed by model.safetensors.index.json) and tokenizer.model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/model.h"

namespace accllm {

// F32 tensors are used in place from the mapping. F16/BF16 tensors are widened to fp32 copies
// (the reference path computes in fp32), and q_proj/k_proj are copied back from Hugging Face's
// rotate-half row order to the Meta/llama2.c interleaved order that the forward pass uses
// (unless options.metadata_only).
absl::StatusOr<std::unique_ptr<Model>> LoadHfCheckpoint(const std::string& dir, const LoadOptions& options);

// The same checkpoint read one tensor at a time (each Fill converts from the mapped shards), for
// tools that must not hold the whole model in fp32: layer-by-layer quantization of a 7B model on a
// machine with less memory than its fp32 copy. The checkpoint is checked as LoadHfCheckpoint checks it.
absl::StatusOr<std::unique_ptr<WeightSource>> OpenHfWeightSource(const std::string& dir);

// The chat template in `dir`'s tokenizer_config.json ("chat_template": a string, or a list of
// {name, template} from which "default" or else the first is taken); empty when the file or the
// key is absent. An unreadable or malformed file is an error.
absl::StatusOr<std::string> ReadHfChatTemplate(const std::string& dir);

struct HfWriteOptions {
  DType dtype = DType::kF32;     // F32, F16 or BF16
  uint64_t max_shard_bytes = 0;  // 0: one model.safetensors; otherwise shards + index
};

// Writes config.json and the safetensors file(s) into `dir` (which must exist). The tokenizer is
// not written.
absl::Status WriteHfCheckpoint(const WeightSource& source, const std::string& dir,
                               const HfWriteOptions& options);

}  // namespace accllm
