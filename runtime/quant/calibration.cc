#include "runtime/quant/calibration.h"

#include <cmath>

#include "absl/strings/str_cat.h"

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

}  // namespace

std::vector<float> InputStats::ColumnNorms() const {
  std::vector<float> norms(cols);
  for (int j = 0; j < cols; ++j) norms[j] = static_cast<float>(std::sqrt(gram[static_cast<std::size_t>(j) * cols + j]));
  return norms;
}

const InputStats& CalibrationStats::For(int layer, TensorKind kind) const {
  return inputs[layer][static_cast<int>(InputOf(kind))];
}

absl::StatusOr<CalibrationStats> Calibrate(const Model& model, const std::vector<std::vector<int>>& sequences,
                                           const std::function<void(int, int)>& progress) {
  const LlamaConfig& c = model.config;
  CalibrationStats stats;
  stats.inputs.resize(c.n_layers);
  for (auto& layer : stats.inputs) {
    for (int i = 0; i < 4; ++i) {
      layer[i].cols = static_cast<Input>(i) == Input::kFfnDown ? c.hidden_dim : c.dim;
      layer[i].gram.assign(static_cast<std::size_t>(layer[i].cols) * layer[i].cols, 0.0);
    }
  }
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
