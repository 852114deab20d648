#include "runtime/quant/calibration.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/engine/engine_weights.h"
#include "runtime/quant/linalg.h"

namespace accllm {
namespace {

using Input = ForwardObserver::Input;

Input InputOf(TensorKind kind) {
  switch (kind) {
    case TensorKind::kWo: return Input::kAttentionOutput;
    case TensorKind::kW1:
    case TensorKind::kW3: return Input::kFfn;
    case TensorKind::kW2: return Input::kFfnDown;
    default: return Input::kAttention;
  }
}

class GramObserver final : public ForwardObserver {
 public:
  explicit GramObserver(CalibrationStats& stats) : stats_(stats) {}
  void OnLinearInput(int layer, Input input, std::span<const float> x) override {
    InputStats& s = stats_.inputs[layer][static_cast<int>(input)];
    const int n = s.cols;
    for (int i = 0; i < n; ++i) {
      const double xi = x[i];
      double* row = s.gram.data() + static_cast<std::size_t>(i) * n;
      for (int j = 0; j < n; ++j) row[j] += xi * x[j];
    }
    ++s.tokens;
  }

 private:
  CalibrationStats& stats_;
};

CalibrationStats EmptyStats(const LlamaConfig& c) {
  CalibrationStats stats;
  stats.inputs.resize(c.n_layers);
  for (auto& layer : stats.inputs) {
    for (int i = 0; i < 4; ++i) {
      layer[i].cols = static_cast<Input>(i) == Input::kFfnDown ? c.hidden_dim : c.dim;
      layer[i].gram.assign(static_cast<std::size_t>(layer[i].cols) * layer[i].cols, 0.0);
    }
  }
  return stats;
}

}  // namespace

std::vector<float> InputStats::ColumnNorms() const {
  std::vector<float> norms(cols);
  for (int j = 0; j < cols; ++j) norms[j] = static_cast<float>(std::sqrt(gram[static_cast<std::size_t>(j) * cols + j]));
  return norms;
}

void InputStats::AddLower(const float* x, int n, int64_t ld, std::vector<float>& scratch) {
  scratch.resize(static_cast<std::size_t>(cols) * cols);
  GramLower(cols, n, x, static_cast<int>(ld), scratch.data(), cols);
  for (int i = 0; i < cols; ++i) {
    const float* from = scratch.data() + static_cast<std::size_t>(i) * cols;
    double* to = gram.data() + static_cast<std::size_t>(i) * cols;
    for (int j = 0; j <= i; ++j) to[j] += from[j];
  }
  tokens += n;
}

void InputStats::MirrorLower() {
  for (int i = 0; i < cols; ++i) {
    for (int j = i + 1; j < cols; ++j) gram[static_cast<std::size_t>(i) * cols + j] = gram[static_cast<std::size_t>(j) * cols + i];
  }
}

const InputStats& CalibrationStats::For(int layer, TensorKind kind) const {
  return inputs[layer][static_cast<int>(InputOf(kind))];
}

absl::StatusOr<CalibrationStats> Calibrate(const Model& model, const std::vector<std::vector<int>>& sequences,
                                           const std::function<void(int, int)>& progress, int threads) {
  const LlamaConfig& c = model.config;
  CalibrationStats stats = EmptyStats(c);
  std::vector<float> product;
  CpuEngineOptions options;
  options.kv_precision = KvPrecision::kF32;
  options.threads = threads;
  options.max_step_tokens = std::min(c.max_seq_len, 512);
  // H += X^T X for the step's tokens: the lower triangle as a float product over at most
  // max_step_tokens terms (BLAS, on every thread), added into the double sum.
  const ScopedGemmThreads gram_threads(threads);
  options.observe_linear_input = [&](int layer, Input input, const float* x, int n, int64_t ld) {
    stats.inputs[layer][static_cast<int>(input)].AddLower(x, n, ld, product);
  };
  options.f32_gemm = [](const float* w, int rows, int cols, const float* x, int n, int64_t ldx, float* y, int64_t ldy) {
    Gemm(Trans::kNo, Trans::kYes, n, rows, cols, 1.0f, x, static_cast<int>(ldx), w, cols, 0.0f, y, static_cast<int>(ldy));
  };
  ASSIGN_OR_RETURN(std::unique_ptr<CpuEngine> engine, CpuEngine::Create(EngineWeightsFromModel(model), options));
  std::vector<float> logits(static_cast<std::size_t>(c.vocab_size));
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    const std::vector<int>& seq = sequences[i];
    if (static_cast<int>(seq.size()) > c.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("calibration sequence of ", seq.size(), " tokens exceeds the context"));
    }
    const std::unique_ptr<SequenceKv> kv = engine->NewSequence();
    for (std::size_t begin = 0; begin < seq.size(); begin += options.max_step_tokens) {
      const std::size_t count = std::min<std::size_t>(options.max_step_tokens, seq.size() - begin);
      RETURN_IF_ERROR(engine->Prefill(*kv, std::span<const int>(seq).subspan(begin, count), logits));
    }
    if (progress) progress(static_cast<int>(i + 1), static_cast<int>(sequences.size()));
  }
  for (auto& layer : stats.inputs) {
    for (InputStats& s : layer) s.MirrorLower();
  }
  return stats;
}

absl::StatusOr<CalibrationStats> CalibrateOnReference(const Model& model, const std::vector<std::vector<int>>& sequences,
                                           const std::function<void(int, int)>& progress) {
  const LlamaConfig& c = model.config;
  CalibrationStats stats = EmptyStats(c);
  GramObserver observer(stats);
  RunState state(c, c.max_seq_len);
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const std::vector<int>& seq = sequences[s];
    if (static_cast<int>(seq.size()) > c.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("calibration sequence of ", seq.size(), " tokens exceeds the context"));
    }
    for (std::size_t pos = 0; pos < seq.size(); ++pos) {
      Forward(model, state, seq[pos], static_cast<int>(pos), &observer);
    }
    if (progress) progress(static_cast<int>(s + 1), static_cast<int>(sequences.size()));
  }
  return stats;
}

}  // namespace accllm
