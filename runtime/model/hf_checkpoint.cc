#include "runtime/model/hf_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/common/half.h"
#include "runtime/common/status_macros.h"

namespace accllm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kConfigFile[] = "config.json";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kSingleFile[] = "model.safetensors";

absl::StatusOr<json> ReadJson(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  json parsed = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a valid JSON object"));
  }
  return parsed;
}

absl::StatusOr<LlamaConfig> ParseHfConfig(const fs::path& path, const json& j) {
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", what));
  };
  const auto get_int = [&](const char* key, std::optional<int> fallback) -> absl::StatusOr<int> {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (fallback) return *fallback;
      return bad(absl::StrCat("missing \"", key, "\""));
    }
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > INT32_MAX) {
      return bad(absl::StrCat("\"", key, "\" must be a positive integer"));
    }
    return static_cast<int>(it->get<int64_t>());
  };
  const auto get_float = [&](const char* key, float fallback) -> absl::StatusOr<float> {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_number()) return bad(absl::StrCat("\"", key, "\" must be a number"));
    return it->get<float>();
  };

  if (const auto it = j.find("model_type"); it != j.end() && *it != "llama") {
    return bad(absl::StrCat("model_type ", it->dump(), " is not supported (only \"llama\")"));
  }
  if (const auto it = j.find("hidden_act"); it != j.end() && *it != "silu") {
    return bad(absl::StrCat("hidden_act ", it->dump(), " is not supported (only \"silu\")"));
  }
  if (const auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    return bad("rope_scaling is not supported");
  }

  LlamaConfig c;
  ASSIGN_OR_RETURN(c.dim, get_int("hidden_size", std::nullopt));
  ASSIGN_OR_RETURN(c.hidden_dim, get_int("intermediate_size", std::nullopt));
  ASSIGN_OR_RETURN(c.n_layers, get_int("num_hidden_layers", std::nullopt));
  ASSIGN_OR_RETURN(c.n_heads, get_int("num_attention_heads", std::nullopt));
  ASSIGN_OR_RETURN(c.n_kv_heads, get_int("num_key_value_heads", c.n_heads));
  ASSIGN_OR_RETURN(c.vocab_size, get_int("vocab_size", std::nullopt));
  ASSIGN_OR_RETURN(c.max_seq_len, get_int("max_position_embeddings", 2048));
  ASSIGN_OR_RETURN(c.norm_eps, get_float("rms_norm_eps", 1e-6f));
  ASSIGN_OR_RETURN(c.rope_theta, get_float("rope_theta", 10000.0f));
  const auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && !tie->is_boolean()) return bad("\"tie_word_embeddings\" must be a boolean");
  c.shared_classifier = tie != j.end() && tie->get<bool>();
  if (absl::Status s = ValidateConfig(c); !s.ok()) return bad(std::string(s.message()));
  if (const auto it = j.find("head_dim"); it != j.end() && !it->is_null() && *it != c.head_size()) {
    return bad(absl::StrCat("head_dim ", it->dump(), " differs from hidden_size / num_attention_heads = ",
                            c.head_size(), "; not supported"));
  }
  return c;
}

// The safetensors files of the checkpoint, and which file holds each tensor.
absl::StatusOr<std::vector<fs::path>> FindShards(const fs::path& dir) {
  std::vector<fs::path> shards;
  if (fs::exists(dir / kIndexFile)) {
    ASSIGN_OR_RETURN(json index, ReadJson(dir / kIndexFile));
    const auto map = index.find("weight_map");
    if (map == index.end() || !map->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat((dir / kIndexFile).string(), ": missing \"weight_map\" object"));
    }
    for (const auto& [name, file] : map->items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat((dir / kIndexFile).string(), ": bad file name for tensor '", name, "'"));
      }
      const fs::path shard = dir / file.get<std::string>();
      if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    }
  } else if (fs::exists(dir / kSingleFile)) {
    shards.push_back(dir / kSingleFile);
  } else {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".safetensors") shards.push_back(entry.path());
    }
    std::sort(shards.begin(), shards.end());
  }
  if (shards.empty()) return absl::NotFoundError(absl::StrCat(dir.string(), ": no *.safetensors files"));
  return shards;
}

// Copies q/k rows from Hugging Face order (per head: all first halves of the rotation pairs, then
// all second halves) back to the interleaved order (pairs adjacent).
void UnpermuteRotaryRows(const float* hf, float* meta, int heads, int head_size, int cols) {
  const int half = head_size / 2;
  for (int h = 0; h < heads; ++h) {
    for (int j = 0; j < half; ++j) {
      for (int s = 0; s < 2; ++s) {
        const float* src = hf + (static_cast<int64_t>(h) * head_size + s * half + j) * cols;
        float* dst = meta + (static_cast<int64_t>(h) * head_size + 2 * j + s) * cols;
        std::copy_n(src, cols, dst);
      }
    }
  }
}

void PermuteRotaryRows(const float* meta, float* hf, int heads, int head_size, int cols) {
  const int half = head_size / 2;
  for (int h = 0; h < heads; ++h) {
    for (int j = 0; j < half; ++j) {
      for (int s = 0; s < 2; ++s) {
        const float* src = meta + (static_cast<int64_t>(h) * head_size + 2 * j + s) * cols;
        float* dst = hf + (static_cast<int64_t>(h) * head_size + s * half + j) * cols;
        std::copy_n(src, cols, dst);
      }
    }
  }
}

void WidenToFloat(const SafetensorsTensor& t, float* out) {
  const std::size_t n = t.data.size() / DTypeSize(t.dtype);
  const std::byte* p = t.data.data();
  for (std::size_t i = 0; i < n; ++i) {
    if (t.dtype == DType::kF32) {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = t.dtype == DType::kF16 ? Fp16ToFloat(h) : Bf16ToFloat(h);
    }
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

namespace {

// A checkpoint's configuration and its tensors as found in the mapped shards, every one checked
// against the configuration (present, shaped as it implies, a float type).
struct CheckpointIndex {
  LlamaConfig config;
  std::vector<std::shared_ptr<SafetensorsFile>> shards;
  std::vector<std::pair<TensorId, const SafetensorsTensor*>> tensors;  // in AllTensors' order
  int64_t file_bytes = 0;

  const SafetensorsTensor& Find(const TensorId& id) const {
    return *std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) {
              return t.first.kind == id.kind && t.first.layer == id.layer;
            })->second;
  }
};

absl::StatusOr<CheckpointIndex> IndexCheckpoint(const std::string& dir_string, LoadMode mode) {
  const fs::path dir(dir_string);
  CheckpointIndex index;
  ASSIGN_OR_RETURN(json config_json, ReadJson(dir / kConfigFile));
  ASSIGN_OR_RETURN(index.config, ParseHfConfig(dir / kConfigFile, config_json));
  ASSIGN_OR_RETURN(std::vector<fs::path> shard_paths, FindShards(dir));
  std::map<std::string, std::pair<const SafetensorsFile*, const SafetensorsTensor*>> by_name;
  for (const fs::path& shard_path : shard_paths) {
    ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> shard, SafetensorsFile::Open(shard_path.string(), mode));
    for (const SafetensorsTensor& t : shard->tensors()) {
      if (by_name.contains(t.name)) {
        return absl::InvalidArgumentError(absl::StrCat(shard_path.string(), ": tensor '", t.name, "' also appears in ",
                                                       by_name[t.name].first->path()));
      }
      by_name[t.name] = {shard.get(), &t};
    }
    index.file_bytes += static_cast<int64_t>(shard->file_size());
    index.shards.push_back(std::move(shard));
  }
  const LlamaConfig& config = index.config;
  for (const TensorId& id : AllTensors(config)) {
    const std::string name = HfTensorName(id);
    const auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat(dir_string, ": missing tensor '", name, "'",
                                                     id.kind == TensorKind::kClassifier ? " (config.json does not set tie_word_embeddings)" : ""));
    }
    const auto& [file, tensor] = it->second;
    const std::vector<int64_t> expected = TensorShape(config, id.kind);
    if (tensor->shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", name, "' has shape ",
                                                     ShapeString(tensor->shape), " but config.json implies ",
                                                     ShapeString(expected)));
    }
    if (tensor->dtype != DType::kF32 && tensor->dtype != DType::kF16 && tensor->dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", name, "' has dtype ",
                                                     DTypeName(tensor->dtype), "; expected F32, F16 or BF16"));
    }
    index.tensors.emplace_back(id, tensor);
  }
  return index;
}

bool IsRotary(TensorKind kind) { return kind == TensorKind::kWq || kind == TensorKind::kWk; }

// `tensor` in fp32 and the forward pass's row order.
void ReadAsFloat(const LlamaConfig& config, const TensorId& id, const SafetensorsTensor& tensor, float* out) {
  WidenToFloat(tensor, out);
  if (IsRotary(id.kind)) {
    const int64_t n = TensorElements(config, id.kind);
    std::vector<float> hf_order(out, out + n);
    const int heads = id.kind == TensorKind::kWq ? config.n_heads : config.n_kv_heads;
    UnpermuteRotaryRows(hf_order.data(), out, heads, config.head_size(), config.dim);
  }
}

class HfWeightSource final : public WeightSource {
 public:
  explicit HfWeightSource(CheckpointIndex index) : index_(std::move(index)) {}
  const LlamaConfig& config() const override { return index_.config; }
  void Fill(const TensorId& id, std::span<float> out) const override {
    // A tied classifier is the embedding.
    const TensorId from = id.kind == TensorKind::kClassifier && index_.config.shared_classifier
                              ? TensorId{TensorKind::kTokenEmbedding, -1}
                              : id;
    ReadAsFloat(index_.config, from, index_.Find(from), out.data());
  }

 private:
  CheckpointIndex index_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> LoadHfCheckpoint(const std::string& dir_string, const LoadOptions& options) {
  ASSIGN_OR_RETURN(CheckpointIndex index, IndexCheckpoint(dir_string, options.mode));
  auto model = std::make_unique<Model>();
  model->format = ModelFormat::kHfSafetensors;
  model->path = dir_string;
  model->load_options = options;
  model->config = index.config;
  model->file_bytes = index.file_bytes;
  for (auto& shard : index.shards) model->storage.push_back(shard);
  const LlamaConfig& config = index.config;
  for (const auto& [id, tensor] : index.tensors) {
    model->tensors.push_back({id, DTypeName(tensor->dtype), static_cast<int64_t>(tensor->data.size())});
    const bool in_place = tensor->dtype == DType::kF32 && !IsRotary(id.kind) &&
                          reinterpret_cast<uintptr_t>(tensor->data.data()) % alignof(float) == 0;
    if (in_place) {
      model->SetTensor(id, reinterpret_cast<const float*>(tensor->data.data()));
      continue;
    }
    if (options.metadata_only) continue;
    float* converted = model->AllocateOwned(TensorElements(config, id.kind));
    if (converted == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("out of memory converting ", HfTensorName(id)));
    }
    ReadAsFloat(config, id, *tensor, converted);
    model->SetTensor(id, converted);
  }
  if (config.shared_classifier) model->weights.classifier = model->weights.token_embedding;
  return model;
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenHfWeightSource(const std::string& dir) {
  ASSIGN_OR_RETURN(CheckpointIndex index, IndexCheckpoint(dir, LoadMode::kMap));
  return std::make_unique<HfWeightSource>(std::move(index));
}

absl::Status WriteHfCheckpoint(const WeightSource& source, const std::string& dir_string,
                               const HfWriteOptions& options) {
  const LlamaConfig& c = source.config();
  RETURN_IF_ERROR(ValidateConfig(c));
  if (options.dtype != DType::kF32 && options.dtype != DType::kF16 && options.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("Hugging Face checkpoints are written as F32, F16 or BF16");
  }
  const fs::path dir(dir_string);
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(dir_string, ": not a directory"));

  const json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_act", "silu"},
      {"hidden_size", c.dim},
      {"intermediate_size", c.hidden_dim},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_seq_len},
      {"rms_norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.shared_classifier},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", options.dtype == DType::kF32 ? "float32" : options.dtype == DType::kF16 ? "float16" : "bfloat16"},
  };
  {
    std::ofstream out(dir / kConfigFile);
    out << config.dump(2) << "\n";
    if (!out) return absl::DataLossError(absl::StrCat((dir / kConfigFile).string(), ": write failed"));
  }

  // Group tensors into shards in order.
  const std::size_t elem_bytes = DTypeSize(options.dtype);
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const TensorId& id : AllTensors(c)) {
    const uint64_t bytes = static_cast<uint64_t>(TensorElements(c, id.kind)) * elem_bytes;
    if (options.max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shard_bytes += bytes;
    total_bytes += bytes;
    shards.back().push_back({HfTensorName(id), options.dtype, TensorShape(c, id.kind),
                             [&source, &c, id, dtype = options.dtype](std::span<std::byte> out) {
                               const int64_t n = TensorElements(c, id.kind);
                               std::vector<float> values(static_cast<std::size_t>(n));
                               source.Fill(id, values);
                               if (id.kind == TensorKind::kWq || id.kind == TensorKind::kWk) {
                                 const std::vector<float> meta = values;
                                 const int heads = id.kind == TensorKind::kWq ? c.n_heads : c.n_kv_heads;
                                 PermuteRotaryRows(meta.data(), values.data(), heads, c.head_size(), c.dim);
                               }
                               for (int64_t i = 0; i < n; ++i) {
                                 if (dtype == DType::kF32) {
                                   std::memcpy(out.data() + 4 * i, &values[i], 4);
                                 } else {
                                   const uint16_t h = dtype == DType::kF16 ? FloatToFp16(values[i]) : FloatToBf16(values[i]);
                                   std::memcpy(out.data() + 2 * i, &h, 2);
                                 }
                               }
                               return absl::OkStatus();
                             }});
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) return WriteSafetensors((dir / kSingleFile).string(), shards[0], metadata);

  json weight_map = json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    RETURN_IF_ERROR(WriteSafetensors((dir / name).string(), shards[s], metadata));
    for (const TensorToWrite& t : shards[s]) weight_map[t.name] = name;
  }
  const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  std::ofstream out(dir / kIndexFile);
  out << index.dump(2) << "\n";
  if (!out) return absl::DataLossError(absl::StrCat((dir / kIndexFile).string(), ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadHfChatTemplate(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::string();
  std::ifstream in(path);
  const json config = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), " is not a JSON object"));
  }
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array() && !it->empty()) {
    const json* chosen = nullptr;
    for (const json& entry : *it) {
      if (!entry.is_object() || !entry.contains("template") || !entry["template"].is_string()) continue;
      if (chosen == nullptr || entry.value("name", "") == "default") chosen = &entry;
    }
    if (chosen != nullptr) return (*chosen)["template"].get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat(path.string(), ": chat_template is neither a string nor a list of templates"));
}

}  // namespace accllm
