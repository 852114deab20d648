#include "runtime/model/packed_model.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace accllm {
namespace {

using nlohmann::json;

std::string LinearBase(const TensorId& id) {
  std::string name = HfTensorName(id);
  return name.substr(0, name.size() - std::string(".weight").size());
}

json ConfigJson(const LlamaConfig& c) {
  return {{"dim", c.dim}, {"hidden_dim", c.hidden_dim}, {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads}, {"vocab_size", c.vocab_size}, {"max_seq_len", c.max_seq_len},
          {"norm_eps", c.norm_eps}, {"rope_theta", c.rope_theta}, {"shared_classifier", c.shared_classifier}, {"ffn_hadamard_block", c.ffn_hadamard_block}};
}

absl::StatusOr<LlamaConfig> ConfigFromJson(const std::string& text) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("metadata 'config' is not a JSON object");
  LlamaConfig c;
  const auto get_int = [&](const char* key, int& out) {
    if (!j.contains(key) || !j[key].is_number_integer()) return false;
    out = j[key].get<int>();
    return true;
  };
  if (!get_int("dim", c.dim) || !get_int("hidden_dim", c.hidden_dim) || !get_int("n_layers", c.n_layers) ||
      !get_int("n_heads", c.n_heads) || !get_int("n_kv_heads", c.n_kv_heads) || !get_int("vocab_size", c.vocab_size) ||
      !get_int("max_seq_len", c.max_seq_len) || !j.contains("norm_eps") || !j["norm_eps"].is_number() ||
      !j.contains("rope_theta") || !j["rope_theta"].is_number() || !j.contains("shared_classifier") ||
      !j["shared_classifier"].is_boolean()) {
    return absl::InvalidArgumentError("metadata 'config' misses a field");
  }
  c.norm_eps = j["norm_eps"].get<float>();
  c.rope_theta = j["rope_theta"].get<float>();
  c.shared_classifier = j["shared_classifier"].get<bool>();
  if (j.contains("ffn_hadamard_block")) {  // absent in files written before it existed: 0
    if (!get_int("ffn_hadamard_block", c.ffn_hadamard_block)) {
      return absl::InvalidArgumentError("metadata 'config': ffn_hadamard_block is not an integer");
    }
  }
  RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

template <typename T>
TensorToWrite Plane(std::string name, DType dtype, std::vector<int64_t> shape, const std::vector<T>& data) {
  return {std::move(name), dtype, std::move(shape), [&data](std::span<std::byte> out) {
            std::memcpy(out.data(), data.data(), out.size());
            return absl::OkStatus();
          }};
}

}  // namespace

absl::Status WritePackedModel(const PackedContents& p, const std::string& path) {
  const LlamaConfig& c = p.config;
  RETURN_IF_ERROR(ValidateConfig(c));
  std::vector<TensorToWrite> codes, params, rest;
  std::vector<std::string> sparse_layers;
  int group_size = 0;
  for (const auto& [id, m] : p.linears) {
    const W2Shape& s = m.shape;
    const std::vector<int64_t> expected = TensorShape(c, id.kind);
    if (s.rows != expected[0] || s.cols != expected[1]) {
      return absl::InvalidArgumentError(absl::StrCat(LinearBase(id), ": W2 shape does not match the config"));
    }
    group_size = s.group_size;
    const std::string base = LinearBase(id);
    const std::vector<int64_t> code_shape = {s.row_tiles(), s.stored_cols() / kW2ColTile, kW2SubBlockBytes};
    const std::vector<int64_t> param_shape = {s.row_tiles(), s.groups(), kW2RowTile};
    codes.push_back(Plane(base + ".qweight", DType::kU8, code_shape, m.codes));
    if (s.sparse24) {
      codes.push_back(Plane(base + ".sparse_index", DType::kU8, code_shape, m.sparse_index));
      sparse_layers.push_back(base);
    }
    params.push_back(Plane(base + ".scales", DType::kF16, param_shape, m.scales));
    params.push_back(Plane(base + ".zeros", DType::kU8, param_shape, m.zeros));
  }
  if (p.linears.size() != static_cast<std::size_t>(7 * c.n_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", 7 * c.n_layers, " linear layers, got ", p.linears.size()));
  }
  if (p.norms.size() != static_cast<std::size_t>(2 * c.n_layers + 1)) return absl::InvalidArgumentError("wrong number of norms");
  const int64_t table = int64_t{c.vocab_size} * c.dim;
  if (static_cast<int64_t>(p.embedding.size()) != table ||
      (!c.shared_classifier && static_cast<int64_t>(p.classifier.size()) != table)) {
    return absl::InvalidArgumentError("embedding or classifier size does not match the config");
  }
  rest.push_back(Plane("model.embed_tokens.weight", DType::kF16, {c.vocab_size, c.dim}, p.embedding));
  if (!c.shared_classifier) rest.push_back(Plane("lm_head.weight", DType::kF16, {c.vocab_size, c.dim}, p.classifier));
  for (int l = 0; l < c.n_layers; ++l) {
    rest.push_back(Plane(HfTensorName({TensorKind::kAttnNorm, l}), DType::kF32, {c.dim}, p.norms[2 * l]));
    rest.push_back(Plane(HfTensorName({TensorKind::kFfnNorm, l}), DType::kF32, {c.dim}, p.norms[2 * l + 1]));
  }
  rest.push_back(Plane("model.norm.weight", DType::kF32, {c.dim}, p.norms.back()));

  std::map<std::string, std::string> metadata = p.metadata;
  metadata["format"] = kPackedFormat;
  metadata["format_version"] = absl::StrCat(kPackedFormatVersion);
  metadata["scheme"] = "W2A8KV4";
  metadata["group_size"] = absl::StrCat(group_size);
  metadata["sparse24_layers"] = absl::StrJoin(sparse_layers, ",");
  metadata["config"] = ConfigJson(c).dump();
  std::vector<TensorToWrite> all = std::move(codes);
  for (auto& t : rest) all.push_back(std::move(t));
  for (auto& t : params) all.push_back(std::move(t));
  return WriteSafetensors(path, all, metadata);
}

bool IsPackedModelFile(const std::string& path) {
  if (!path.ends_with(".safetensors")) return false;
  std::ifstream in(path, std::ios::binary);
  uint64_t len = 0;
  if (!in.read(reinterpret_cast<char*>(&len), 8) || len > (64u << 20)) return false;
  std::string header(len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(len))) return false;
  return header.find(std::string("\"format\":\"") + kPackedFormat + "\"") != std::string::npos;
}

absl::StatusOr<std::unique_ptr<PackedModel>> LoadPackedModel(const std::string& path, LoadMode mode) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path, mode));
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid packed model: ", what));
  };
  const auto& meta = file->metadata();
  const auto get = [&](const char* key) -> std::string {
    const auto it = meta.find(key);
    return it == meta.end() ? "" : it->second;
  };
  if (get("format") != kPackedFormat) return bad("metadata 'format' is not accllm-packed");
  if (get("format_version") != absl::StrCat(kPackedFormatVersion)) {
    if (get("format_version") == "1") {
      return bad("format_version 1 (zero points in whole steps) is no longer read: run `accllm quantize` again");
    }
    return bad(absl::StrCat("unsupported format_version '", get("format_version"), "'"));
  }
  absl::StatusOr<LlamaConfig> config = ConfigFromJson(get("config"));
  if (!config.ok()) return bad(std::string(config.status().message()));
  int group_size = 0;
  if (!absl::SimpleAtoi(get("group_size"), &group_size)) return bad("metadata 'group_size' is not a number");

  auto model = std::make_unique<PackedModel>();
  model->path = path;
  model->config = *config;
  model->metadata = meta;
  const LlamaConfig& c = model->config;
  const auto find = [&](const std::string& name, DType dtype, std::vector<int64_t> shape) -> absl::StatusOr<const std::byte*> {
    const SafetensorsTensor* t = file->Find(name);
    if (t == nullptr) return bad(absl::StrCat("missing tensor '", name, "'"));
    if (t->dtype != dtype || t->shape != shape) {
      return bad(absl::StrCat("tensor '", name, "' is ", DTypeName(t->dtype), " [", absl::StrJoin(t->shape, ", "),
                              "], expected ", DTypeName(dtype), " [", absl::StrJoin(shape, ", "), "]"));
    }
    if (reinterpret_cast<uintptr_t>(t->data.data()) % DTypeSize(dtype) != 0) return bad(absl::StrCat("tensor '", name, "' is misaligned"));
    return t->data.data();
  };

  ASSIGN_OR_RETURN(const std::byte* embedding, find("model.embed_tokens.weight", DType::kF16, {c.vocab_size, c.dim}));
  model->embedding = reinterpret_cast<const uint16_t*>(embedding);
  model->classifier = model->embedding;
  if (!c.shared_classifier) {
    ASSIGN_OR_RETURN(const std::byte* head, find("lm_head.weight", DType::kF16, {c.vocab_size, c.dim}));
    model->classifier = reinterpret_cast<const uint16_t*>(head);
  }
  ASSIGN_OR_RETURN(const std::byte* final_norm, find("model.norm.weight", DType::kF32, {c.dim}));
  model->final_norm = reinterpret_cast<const float*>(final_norm);
  for (const TensorId& id : AllTensors(c)) {
    if (id.kind == TensorKind::kAttnNorm || id.kind == TensorKind::kFfnNorm) {
      ASSIGN_OR_RETURN(const std::byte* norm, find(HfTensorName(id), DType::kF32, {c.dim}));
      (id.kind == TensorKind::kAttnNorm ? model->attn_norms : model->ffn_norms).push_back(reinterpret_cast<const float*>(norm));
      continue;
    }
    if (!IsLinear(id.kind)) continue;
    const std::string base = LinearBase(id);
    const std::vector<int64_t> dims = TensorShape(c, id.kind);
    W2View view;
    view.shape = {static_cast<int>(dims[0]), static_cast<int>(dims[1]), group_size, file->Find(base + ".sparse_index") != nullptr};
    if (absl::Status s = ValidateW2Shape(view.shape); !s.ok()) return bad(std::string(s.message()));
    const W2Shape& s = view.shape;
    const std::vector<int64_t> code_shape = {s.row_tiles(), s.stored_cols() / kW2ColTile, kW2SubBlockBytes};
    const std::vector<int64_t> param_shape = {s.row_tiles(), s.groups(), kW2RowTile};
    ASSIGN_OR_RETURN(const std::byte* codes, find(base + ".qweight", DType::kU8, code_shape));
    ASSIGN_OR_RETURN(const std::byte* scales, find(base + ".scales", DType::kF16, param_shape));
    ASSIGN_OR_RETURN(const std::byte* zeros, find(base + ".zeros", DType::kU8, param_shape));
    view.codes = reinterpret_cast<const uint8_t*>(codes);
    view.scales = reinterpret_cast<const uint16_t*>(scales);
    view.zeros = reinterpret_cast<const uint8_t*>(zeros);
    if (s.sparse24) {
      ASSIGN_OR_RETURN(const std::byte* index, find(base + ".sparse_index", DType::kU8, code_shape));
      view.sparse_index = reinterpret_cast<const uint8_t*>(index);
    }
    for (int64_t i = 0; i < s.group_params(); ++i) {
      if (view.zeros[i] > kW2MaxZero) {
        return bad(absl::StrCat("tensor '", base, ".zeros' holds ", int{view.zeros[i]}, " (> ", kW2MaxZero, ")"));
      }
    }
    model->linears.emplace_back(id, view);
  }
  model->file = std::move(file);
  return model;
}

absl::StatusOr<PackedContents> ReadPackedContents(const std::string& path) {
  ASSIGN_OR_RETURN(const std::unique_ptr<PackedModel> model, LoadPackedModel(path, LoadMode::kAnonymous));
  const LlamaConfig& c = model->config;
  PackedContents out;
  out.config = c;
  out.metadata = model->metadata;
  const std::size_t table = static_cast<std::size_t>(c.vocab_size) * c.dim;
  out.embedding.assign(model->embedding, model->embedding + table);
  if (!c.shared_classifier) out.classifier.assign(model->classifier, model->classifier + table);
  for (int l = 0; l < c.n_layers; ++l) {
    out.norms.emplace_back(model->attn_norms[l], model->attn_norms[l] + c.dim);
    out.norms.emplace_back(model->ffn_norms[l], model->ffn_norms[l] + c.dim);
  }
  out.norms.emplace_back(model->final_norm, model->final_norm + c.dim);
  for (const auto& [id, view] : model->linears) {
    W2Matrix m(view.shape);
    std::copy_n(view.codes, m.codes.size(), m.codes.begin());
    if (view.sparse_index != nullptr) std::copy_n(view.sparse_index, m.sparse_index.size(), m.sparse_index.begin());
    std::copy_n(view.scales, m.scales.size(), m.scales.begin());
    std::copy_n(view.zeros, m.zeros.size(), m.zeros.begin());
    out.linears.emplace_back(id, std::move(m));
  }
  return out;
}

EngineWeights PackedModel::ToEngineWeights() const {
  EngineWeights e;
  e.config = config;
  e.embedding_f16 = embedding;
  e.rms_final = final_norm;
  e.classifier.out = config.vocab_size;
  e.classifier.in = config.dim;
  e.classifier.f16 = classifier;
  e.layers.resize(config.n_layers);
  for (int l = 0; l < config.n_layers; ++l) {
    e.layers[l].rms_att = attn_norms[l];
    e.layers[l].rms_ffn = ffn_norms[l];
  }
  for (const auto& [id, view] : linears) {
    LinearWeights& target = LinearOf(e.layers[id.layer], id.kind);
    target.out = view.shape.rows;
    target.in = view.shape.cols;
    target.w2 = view;
  }
  return e;
}

}  // namespace accllm
