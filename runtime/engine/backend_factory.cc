#include "runtime/engine/backend_factory.h"

#include "runtime/cpu/cpu_engine.h"
#include "runtime/engine/engine_weights.h"
#include "runtime/eval/weight_variants.h"
#include "runtime/model/load_model.h"
#include "runtime/reference/reference_backend.h"

namespace accllm {

absl::StatusOr<AnyModel> LoadAnyModel(const std::string& path, LoadMode mode) {
  AnyModel m;
  m.path = path;
  if (IsPackedModelFile(path)) {
    absl::StatusOr<std::unique_ptr<PackedModel>> packed = LoadPackedModel(path, mode);
    if (!packed.ok()) return packed.status();
    m.packed = std::move(*packed);
  } else {
    absl::StatusOr<std::unique_ptr<Model>> fp32 = LoadModel(path, {.mode = mode});
    if (!fp32.ok()) return fp32.status();
    m.fp32 = std::move(*fp32);
  }
  return m;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const AnyModel& model, const std::string& given) {
  std::string path = given;
  if (path.empty()) {
    absl::StatusOr<std::string> found = DefaultTokenizerPath(model.path, model.config().vocab_size);
    if (!found.ok()) return found.status();
    path = *found;
  }
  return LoadTokenizer(path);
}

LambdaConfig LambdaFor(const BackendOptions& options) {
  return options.window > 0 ? LambdaConfig{options.sinks, options.window} : LambdaConfig{};
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& flags, const AnyModel& model) {
  const std::string engine = !flags.engine.empty() ? flags.engine : model.packed ? "cpu" : "reference";
  if (engine == "reference") {
    if (model.packed) return absl::InvalidArgumentError("the reference engine runs fp32 models; use --engine cpu");
    if (flags.window > 0) return absl::InvalidArgumentError("Λ attention (--window) needs --engine cpu");
    return std::make_unique<ReferenceBackend>(*model.fp32);
  }
  CpuEngineOptions options;
  options.lambda = LambdaFor(flags);
  options.kv_precision = flags.kv == "f32" ? KvPrecision::kF32 : KvPrecision::kKv4;
  options.kv4_rotation = flags.kv4_rotation;
  if (flags.classifier != "f16" && flags.classifier != "w8") {
    return absl::InvalidArgumentError("the classifier precision is f16 or w8, not '" + flags.classifier + "'");
  }
  options.w8_classifier = flags.classifier == "w8";
  options.threads = flags.threads;
  options.pin_threads = flags.pin_threads;
  options.page_tokens = flags.page_tokens;
  options.kv_pages = flags.kv_pages;
  options.fake_quantize_activations = flags.fake_a8;
  options.max_step_tokens = flags.max_step_tokens;
  options.kernels = flags.kernels;
  options.label = flags.label;
  options.max_attention_span = flags.max_attention_span;
  options.step_offload = flags.step_offload;
  if (flags.w2_as_f32 && !model.packed) return absl::InvalidArgumentError("--w2-as-f32 needs a packed model");
  EngineWeights weights = model.packed ? model.packed->ToEngineWeights() : EngineWeightsFromModel(*model.fp32);
  if (flags.w2_as_f32) weights = DequantizeW2Layers(std::move(weights));
  absl::StatusOr<std::unique_ptr<CpuEngine>> cpu = CpuEngine::Create(std::move(weights), options);
  if (!cpu.ok()) return cpu.status();
  return std::unique_ptr<Backend>(std::move(*cpu));
}

}  // namespace accllm
