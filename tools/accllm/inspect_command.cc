// accllm inspect: what a model file holds.
#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/str_join.h"
#include "runtime/model/load_model.h"
#include "runtime/model/packed_model.h"
#include "tools/accllm/commands.h"

namespace accllm::cli {
namespace {

// Which group a packed tensor belongs to, from its name.
TensorGroup PackedGroup(const std::string& name) {
  if (name.find("embed_tokens") != std::string::npos) return TensorGroup::kEmbedding;
  if (name.find("lm_head") != std::string::npos) return TensorGroup::kClassifier;
  if (name.find("norm") != std::string::npos) return TensorGroup::kNorm;
  if (name.find("self_attn") != std::string::npos) return TensorGroup::kAttention;
  return TensorGroup::kFfn;
}

int InspectPacked(const std::string& path) {
  absl::StatusOr<std::unique_ptr<PackedModel>> loaded = LoadPackedModel(path);
  if (!loaded.ok()) return ReportError(loaded.status());
  const PackedModel& m = **loaded;
  const LlamaConfig& c = m.config;
  std::printf("model:       %s\n", path.c_str());
  std::printf("format:      packed W2A8KV4 (safetensors)\n");
  for (const auto& [key, value] : m.metadata) {
    if (key != "config") std::printf("  %-22s %s\n", key.c_str(), value.empty() ? "-" : value.c_str());
  }
  std::printf("dim %d, hidden_dim %d, layers %d, heads %d, kv_heads %d, vocab %d, context %d, classifier %s\n",
              c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len,
              c.shared_classifier ? "shared" : "separate");
  std::printf("parameters:  %lld\n\n", static_cast<long long>(ParameterCount(c)));
  std::map<TensorGroup, std::pair<int64_t, int64_t>> groups;  // parameters, bytes
  for (const TensorId& id : AllTensors(c)) groups[GroupOf(id.kind)].first += TensorElements(c, id.kind);
  int sparse = 0;
  for (const auto& [id, view] : m.linears) sparse += view.shape.sparse24;
  for (const SafetensorsTensor& t : m.file->tensors()) groups[PackedGroup(t.name)].second += static_cast<int64_t>(t.data.size());
  std::printf("%-11s %14s %14s %12s\n", "group", "parameters", "bytes", "bits/weight");
  int64_t total_params = 0, total_bytes = 0;
  for (const auto& [group, pb] : groups) {
    std::printf("%-11s %14lld %14lld %12.3f\n", TensorGroupName(group), static_cast<long long>(pb.first),
                static_cast<long long>(pb.second), 8.0 * pb.second / pb.first);
    total_params += pb.first;
    total_bytes += pb.second;
  }
  std::printf("%-11s %14lld %14lld %12.3f   (%d of %zu linear layers 2:4 sparse)\n", "total",
              static_cast<long long>(total_params), static_cast<long long>(total_bytes), 8.0 * total_bytes / total_params,
              sparse, m.linears.size());
  return 0;
}

int RunInspect(const std::string& path) {
  if (IsPackedModelFile(path)) return InspectPacked(path);
  absl::StatusOr<std::unique_ptr<Model>> loaded = LoadModel(path, {.metadata_only = true});
  if (!loaded.ok()) return ReportError(loaded.status());
  const Model& m = **loaded;
  const LlamaConfig& c = m.config;

  std::printf("model:       %s\n", m.path.c_str());
  std::printf("format:      %s\n", ModelFormatName(m.format));
  std::printf("file bytes:  %lld\n", static_cast<long long>(m.file_bytes));
  std::printf("dim %d, hidden_dim %d, layers %d, heads %d, kv_heads %d (head size %d), vocab %d, "
              "context %d\n",
              c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_size(), c.vocab_size,
              c.max_seq_len);
  std::printf("norm eps %g, rope theta %g, classifier %s\n", c.norm_eps, c.rope_theta,
              c.shared_classifier ? "shared with the embedding" : "separate");
  std::printf("parameters:  %lld\n\n", static_cast<long long>(ParameterCount(c)));

  struct GroupStats {
    int tensors = 0;
    int64_t params = 0;
    int64_t bytes = 0;
    std::set<std::string> dtypes;
    std::set<std::string> shapes;
  };
  std::map<TensorGroup, GroupStats> groups;
  for (const TensorRecord& t : m.tensors) {
    GroupStats& g = groups[GroupOf(t.id.kind)];
    g.tensors++;
    g.params += TensorElements(c, t.id.kind);
    g.bytes += t.file_bytes;
    g.dtypes.insert(t.file_dtype);
    g.shapes.insert("[" + absl::StrJoin(TensorShape(c, t.id.kind), ", ") + "]");
  }
  std::printf("%-11s %7s %14s %14s %8s  %-6s %s\n", "group", "tensors", "parameters", "bytes",
              "bits/w", "dtype", "shapes");
  int64_t total_params = 0, total_bytes = 0;
  for (const auto& [group, g] : groups) {
    std::printf("%-11s %7d %14lld %14lld %8.2f  %-6s %s\n", TensorGroupName(group), g.tensors,
                static_cast<long long>(g.params), static_cast<long long>(g.bytes),
                8.0 * g.bytes / g.params, absl::StrJoin(g.dtypes, ",").c_str(),
                absl::StrJoin(g.shapes, " ").c_str());
    total_params += g.params;
    total_bytes += g.bytes;
  }
  std::printf("%-11s %7zu %14lld %14lld %8.2f\n", "total", m.tensors.size(),
              static_cast<long long>(total_params), static_cast<long long>(total_bytes),
              8.0 * total_bytes / total_params);
  return 0;
}

}  // namespace

void AddInspectCommand(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show a model's format, shapes, parameter count and bytes per tensor group");
  cmd->add_option("model", *path, "llama2.c .bin file or Hugging Face checkpoint directory")->required();
  cmd->callback([path, exit_code] { *exit_code = RunInspect(*path); });
}

}  // namespace accllm::cli
