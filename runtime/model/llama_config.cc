#include "runtime/model/llama_config.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace accllm {

absl::Status ValidateConfig(const LlamaConfig& c) {
  // Upper bounds keep every product below 2^63 and reject garbage headers early.
  struct Field {
    const char* name;
    int value;
    int max;
  };
  const Field fields[] = {
      {"dim", c.dim, 1 << 16},           {"hidden_dim", c.hidden_dim, 1 << 18},
      {"n_layers", c.n_layers, 1024},    {"n_heads", c.n_heads, 1024},
      {"n_kv_heads", c.n_kv_heads, 1024}, {"vocab_size", c.vocab_size, 1 << 22},
      {"max_seq_len", c.max_seq_len, 1 << 24},
  };
  for (const Field& f : fields) {
    if (f.value <= 0 || f.value > f.max) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.name, " = ", f.value, " is out of range (1..", f.max, ")"));
    }
  }
  if (c.ffn_hadamard_block != 0 &&
      (c.ffn_hadamard_block < 0 || (c.ffn_hadamard_block & (c.ffn_hadamard_block - 1)) != 0 ||
       c.hidden_dim % c.ffn_hadamard_block != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("ffn_hadamard_block = ", c.ffn_hadamard_block,
                                                   " is not a power of two dividing hidden_dim = ", c.hidden_dim));
  }
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dim ", c.dim, " is not divisible by n_heads ", c.n_heads));
  }
  if (c.head_size() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head size ", c.head_size(), " is odd; RoPE needs pairs"));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("n_heads ", c.n_heads,
                                                   " is not a multiple of n_kv_heads ",
                                                   c.n_kv_heads));
  }
  if (!(c.norm_eps > 0.0f && c.norm_eps < 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("norm_eps ", c.norm_eps, " is out of range"));
  }
  if (!(c.rope_theta > 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("rope_theta ", c.rope_theta, " is out of range"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LlamaConfig> ParseShape(const std::string& spec) {
  auto make = [](int dim, int ffn, int layers, int heads, int kv_heads, int vocab, int seq) {
    LlamaConfig c;
    c.dim = dim;
    c.hidden_dim = ffn;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.vocab_size = vocab;
    c.max_seq_len = seq;
    c.shared_classifier = false;
    return c;
  };
  if (spec == "llama2-7b") return make(4096, 11008, 32, 32, 32, 32000, 4096);
  if (spec == "llama2-13b") return make(5120, 13824, 40, 40, 40, 32000, 4096);
  if (spec == "tinyllama-1.1b") return make(2048, 5632, 22, 32, 4, 32000, 2048);

  std::map<std::string, int> values = {{"vocab", 32000}, {"seq", 2048}};
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::vector<std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    int value = 0;
    static const char* const kKeys[] = {"dim", "ffn", "layers", "heads", "kv_heads", "vocab", "seq"};
    const bool known = std::find(std::begin(kKeys), std::end(kKeys), kv[0]) != std::end(kKeys);
    if (kv.size() != 2 || !known || !absl::SimpleAtoi(kv[1], &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad shape '", spec, "': expected llama2-7b, llama2-13b, tinyllama-1.1b or "
          "dim=N,ffn=N,layers=N,heads=N[,kv_heads=N][,vocab=N][,seq=N]"));
    }
    values[kv[0]] = value;
  }
  for (const char* required : {"dim", "ffn", "layers", "heads"}) {
    if (!values.contains(required)) {
      return absl::InvalidArgumentError(absl::StrCat("bad shape '", spec, "': missing ", required));
    }
  }
  const int kv_heads = values.contains("kv_heads") ? values["kv_heads"] : values["heads"];
  LlamaConfig c = make(values["dim"], values["ffn"], values["layers"], values["heads"], kv_heads,
                       values["vocab"], values["seq"]);
  if (absl::Status s = ValidateConfig(c); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("bad shape '", spec, "': ", s.message()));
  }
  return c;
}

const char* TensorGroupName(TensorGroup group) {
  switch (group) {
    case TensorGroup::kEmbedding: return "embedding";
    case TensorGroup::kAttention: return "attention";
    case TensorGroup::kFfn: return "ffn";
    case TensorGroup::kNorm: return "norms";
    case TensorGroup::kClassifier: return "classifier";
  }
  return "?";
}

TensorGroup GroupOf(TensorKind kind) {
  switch (kind) {
    case TensorKind::kTokenEmbedding: return TensorGroup::kEmbedding;
    case TensorKind::kWq:
    case TensorKind::kWk:
    case TensorKind::kWv:
    case TensorKind::kWo: return TensorGroup::kAttention;
    case TensorKind::kW1:
    case TensorKind::kW2:
    case TensorKind::kW3: return TensorGroup::kFfn;
    case TensorKind::kAttnNorm:
    case TensorKind::kFfnNorm:
    case TensorKind::kFinalNorm: return TensorGroup::kNorm;
    case TensorKind::kClassifier: return TensorGroup::kClassifier;
  }
  return TensorGroup::kNorm;
}

bool IsPerLayer(TensorKind kind) {
  return kind != TensorKind::kTokenEmbedding && kind != TensorKind::kFinalNorm &&
         kind != TensorKind::kClassifier;
}

bool IsLinear(TensorKind kind) {
  return IsPerLayer(kind) && kind != TensorKind::kAttnNorm && kind != TensorKind::kFfnNorm;
}

std::vector<int64_t> TensorShape(const LlamaConfig& c, TensorKind kind) {
  const int64_t q_dim = int64_t{c.n_heads} * c.head_size();
  switch (kind) {
    case TensorKind::kTokenEmbedding:
    case TensorKind::kClassifier: return {c.vocab_size, c.dim};
    case TensorKind::kAttnNorm:
    case TensorKind::kFfnNorm:
    case TensorKind::kFinalNorm: return {c.dim};
    case TensorKind::kWq: return {q_dim, c.dim};
    case TensorKind::kWk:
    case TensorKind::kWv: return {c.kv_dim(), c.dim};
    case TensorKind::kWo: return {c.dim, q_dim};
    case TensorKind::kW1:
    case TensorKind::kW3: return {c.hidden_dim, c.dim};
    case TensorKind::kW2: return {c.dim, c.hidden_dim};
  }
  return {};
}

int64_t TensorElements(const LlamaConfig& config, TensorKind kind) {
  int64_t n = 1;
  for (int64_t d : TensorShape(config, kind)) n *= d;
  return n;
}

std::string HfTensorName(const TensorId& id) {
  const std::string layer = absl::StrCat("model.layers.", id.layer, ".");
  switch (id.kind) {
    case TensorKind::kTokenEmbedding: return "model.embed_tokens.weight";
    case TensorKind::kAttnNorm: return layer + "input_layernorm.weight";
    case TensorKind::kWq: return layer + "self_attn.q_proj.weight";
    case TensorKind::kWk: return layer + "self_attn.k_proj.weight";
    case TensorKind::kWv: return layer + "self_attn.v_proj.weight";
    case TensorKind::kWo: return layer + "self_attn.o_proj.weight";
    case TensorKind::kFfnNorm: return layer + "post_attention_layernorm.weight";
    case TensorKind::kW1: return layer + "mlp.gate_proj.weight";
    case TensorKind::kW2: return layer + "mlp.down_proj.weight";
    case TensorKind::kW3: return layer + "mlp.up_proj.weight";
    case TensorKind::kFinalNorm: return "model.norm.weight";
    case TensorKind::kClassifier: return "lm_head.weight";
  }
  return "?";
}

std::vector<TensorId> AllTensors(const LlamaConfig& config) {
  std::vector<TensorId> ids = {{TensorKind::kTokenEmbedding}};
  for (int l = 0; l < config.n_layers; ++l) {
    for (TensorKind k : {TensorKind::kAttnNorm, TensorKind::kWq, TensorKind::kWk, TensorKind::kWv,
                         TensorKind::kWo, TensorKind::kFfnNorm, TensorKind::kW1, TensorKind::kW2,
                         TensorKind::kW3}) {
      ids.push_back({k, l});
    }
  }
  ids.push_back({TensorKind::kFinalNorm});
  if (!config.shared_classifier) ids.push_back({TensorKind::kClassifier});
  return ids;
}

int64_t ParameterCount(const LlamaConfig& config) {
  int64_t n = 0;
  for (const TensorId& id : AllTensors(config)) n += TensorElements(config, id.kind);
  return n;
}

}  // namespace accllm
