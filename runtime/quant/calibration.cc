#include "runtime/quant/calibration.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/quant/linalg.h"
#include "runtime/quant/train/layer_backprop.h"

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
  for (const std::vector<int>& seq : sequences) {
    if (static_cast<int>(seq.size()) > c.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("calibration sequence of ", seq.size(), " tokens exceeds the context"));
    }
    for (int token : seq) {
      if (token < 0 || token >= c.vocab_size) return absl::InvalidArgumentError(absl::StrCat("calibration token ", token, " out of range"));
    }
  }
  CalibrationStats stats = EmptyStats(c);
  const ScopedGemmThreads blas_threads(threads);
  // Layer by layer over every sequence, each layer's forward pass as matrix products over the
  // whole sequence (LayerForward): the hidden states of all sequences are kept between layers
  // (tokens x dim floats), so only one layer is ever at work.
  std::vector<std::vector<float>> hidden(sequences.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    hidden[i].resize(sequences[i].size() * static_cast<std::size_t>(c.dim));
    for (std::size_t t = 0; t < sequences[i].size(); ++t) {
      const float* row = model.weights.token_embedding + static_cast<std::size_t>(sequences[i][t]) * c.dim;
      std::copy(row, row + c.dim, hidden[i].begin() + static_cast<std::ptrdiff_t>(t * c.dim));
    }
  }
  LayerActivations saved;
  std::vector<float> output, scratch;
  for (int layer = 0; layer < c.n_layers; ++layer) {
    auto& inputs = stats.inputs[layer];
    for (std::size_t i = 0; i < sequences.size(); ++i) {
      const int tokens = static_cast<int>(sequences[i].size());
      if (tokens == 0) continue;
      output.resize(hidden[i].size());
      LayerForward(c, model.weights.layers[layer], hidden[i].data(), tokens, output.data(), &saved);
      const std::pair<Input, const std::vector<float>*> observed[] = {
          {Input::kAttention, &saved.a}, {Input::kAttentionOutput, &saved.o}, {Input::kFfn, &saved.b}, {Input::kFfnDown, &saved.h}};
      for (const auto& [input, x] : observed) {
        InputStats& s = inputs[static_cast<int>(input)];
        // The float products over at most 512 tokens each, added into the double sums.
        for (int t0 = 0; t0 < tokens; t0 += 512) {
          s.AddLower(x->data() + static_cast<std::size_t>(t0) * s.cols, std::min(512, tokens - t0), s.cols, scratch);
        }
      }
      hidden[i].swap(output);
    }
    if (progress) progress(layer + 1, c.n_layers);
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
