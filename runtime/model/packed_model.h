// The packed W2A8KV4 model file: a safetensors file that standard tools can open, holding
//
//   <linear>.qweight        U8   [row_tiles, stored_cols / 16, 64]  W2 codes (see quant/w2.h)
//   <linear>.sparse_index   U8   same shape                          2:4 positions (pruned layers)
//   <linear>.scales         F16  [row_tiles, groups, 16]
//   <linear>.zeros          U8   [row_tiles, groups, 16]
//   model.embed_tokens.weight  F16  [vocab, dim]     (rows are gathered: fp16 loses nothing that matters)
//   lm_head.weight             F16  [vocab, dim]     (absent when shared with the embedding)
//   *norm*.weight              F32  [dim]
//
// where <linear> is the Hugging Face name without ".weight" (model.layers.0.self_attn.q_proj).
// Code planes come first so that each starts 64-byte aligned in the file, ready to be used from
// the memory map. __metadata__ records format, version, scheme, group size, which layers are
// 2:4 pruned, the pruning and quantization methods, the source model, the tool version and the
// model configuration (JSON).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/engine_weights.h"
#include "runtime/io/safetensors.h"
#include "runtime/quant/w2.h"

namespace accllm {

inline constexpr char kPackedFormat[] = "accllm-packed";
// 2: zero points in half steps (w = scale * (2q - zero)); version 1's whole-step zeros are not read.
inline constexpr int kPackedFormatVersion = 2;

// Everything a packed file holds, in memory (what `accllm quantize` produces).
struct PackedContents {
  LlamaConfig config;
  std::vector<uint16_t> embedding;        // fp16 (vocab, dim)
  std::vector<uint16_t> classifier;       // fp16 (vocab, dim); empty when shared
  std::vector<std::vector<float>> norms;  // per layer: attention, ffn; then the final norm
  // One W2 matrix per linear layer, in AllTensors() order (7 per layer).
  std::vector<std::pair<TensorId, W2Matrix>> linears;
  std::map<std::string, std::string> metadata;  // extra entries (methods, source, ...)
};

absl::Status WritePackedModel(const PackedContents& contents, const std::string& path);

// A packed model mapped from disk.
struct PackedModel {
  std::string path;
  LlamaConfig config;
  std::map<std::string, std::string> metadata;
  std::unique_ptr<SafetensorsFile> file;
  std::vector<std::pair<TensorId, W2View>> linears;
  const uint16_t* embedding = nullptr;
  const uint16_t* classifier = nullptr;  // == embedding when shared
  std::vector<const float*> attn_norms, ffn_norms;
  const float* final_norm = nullptr;

  // The engine's view of these weights (the model must outlive it).
  EngineWeights ToEngineWeights() const;
};

// True if `path` is a safetensors file whose metadata says it is a packed model.
bool IsPackedModelFile(const std::string& path);

absl::StatusOr<std::unique_ptr<PackedModel>> LoadPackedModel(const std::string& path, LoadMode mode = LoadMode::kMap);

// A packed file read back into memory, to be changed and written again.
absl::StatusOr<PackedContents> ReadPackedContents(const std::string& path);

}  // namespace accllm
