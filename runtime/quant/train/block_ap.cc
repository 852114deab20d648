#include "runtime/quant/train/block_ap.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/common/half.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/quant/linalg.h"
#include "runtime/quant/train/layer_backprop.h"
#include "runtime/quant/train/layer_linears.h"

namespace accllm {
namespace {

double SquaredError(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += (double{a[i]} - b[i]) * (double{a[i]} - b[i]);
  return sum;
}

}  // namespace

BlockRefiner::BlockRefiner(const LlamaConfig& config, std::span<const std::vector<int>> sequences,
                           const BlockApOptions& options, Activations q_in)
    : c_(config), sequences_(sequences), options_(options), q_in_(std::move(q_in)), rng_(options.seed),
      order_(sequences.size()), pool_(options.threads) {
  std::iota(order_.begin(), order_.end(), 0);
}

absl::Status BlockRefiner::Validate(const LlamaConfig& c, std::span<const std::vector<int>> sequences,
                                    const BlockApOptions& options) {
  if (sequences.empty()) return absl::InvalidArgumentError("block reconstruction needs calibration sequences");
  if (options.epochs < 1 || options.batch_sequences < 1) return absl::InvalidArgumentError("epochs and batch must be positive");
  for (const auto& s : sequences) {
    if (s.empty() || static_cast<int>(s.size()) > c.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("calibration sequences need 1..", c.max_seq_len, " tokens"));
    }
    for (int t : s) {
      if (t < 0 || t >= c.vocab_size) return absl::InvalidArgumentError(absl::StrCat("token id ", t, " out of range"));
    }
  }
  return absl::OkStatus();
}

BlockApReport BlockRefiner::Refine(int layer, const LayerWeights& fp, Activations& fp_in, std::span<W2Matrix* const> linears,
                                   std::span<const std::vector<float>* const> positions, std::vector<float>& att_gain,
                                   std::vector<float>& ffn_gain) {
  const LlamaConfig& c = c_;
  const std::span<const std::vector<int>> sequences = sequences_;
  const BlockApOptions& options = options_;
  const std::size_t n = sequences.size();
  // The seven matrices' updates between products (gradient, Adam step, dequantization) run side
  // by side: one thread did them while the BLAS threads waited, 14% of the time on 2 cores.
  ThreadPool& pool = pool_;
  SetGemmThreads(options.threads);
  Activations& q_in = q_in_;
  std::vector<float>& y = y_;
  std::vector<float>& dy = dy_;
  const auto start = std::chrono::steady_clock::now();
  BlockApReport report;
  report.layer = layer;
  double elements = 0;
  for (std::size_t i = 0; i < n; ++i) {
    target_[i].resize(fp_in[i].size());
    LayerForward(c, fp, fp_in[i].data(), static_cast<int>(sequences[i].size()), target_[i].data());
    for (float v : target_[i]) report.target_energy += double{v} * v;
    elements += static_cast<double>(target_[i].size());
  }
  report.target_energy /= elements;
  const Activations& target = target_;

  std::vector<TrainableW2> trainable;
  std::vector<std::vector<float>> dense;
  for (std::size_t m = 0; m < linears.size(); ++m) {
    trainable.emplace_back(*linears[m], positions.empty() ? std::span<const float>() : std::span<const float>(*positions[m]));
    dense.emplace_back(static_cast<std::size_t>(trainable.back().rows()) * trainable.back().cols());
    trainable.back().Dequantize(dense.back());
  }
  // The layer's norm gains, trained too when asked (they scale q/k/v's and gate/up's input
  // channels, which the per-row groups cannot).
  const std::vector<float> att_gain_before = att_gain, ffn_gain_before = ffn_gain;
  LayerWeights w = WithLinears(fp, dense);
  w.rms_att = att_gain.data();
  w.rms_ffn = ffn_gain.data();
  for (std::size_t i = 0; i < n; ++i) {
    y.resize(q_in[i].size());
    LayerForward(c, w, q_in[i].data(), static_cast<int>(sequences[i].size()), y.data());
    report.error_before += SquaredError(y, target[i]);
  }
  report.error_before /= elements;

  const bool train_norms = options.adam.norm_lr > 0;
  LayerGradients grads(c, train_norms);
  AdamState att_adam(c.dim), ffn_adam(c.dim);
  LayerActivations saved;
  std::vector<float>* grad_of[] = {&grads.wq, &grads.wk, &grads.wv, &grads.wo, &grads.w1, &grads.w2, &grads.w3};
  const std::size_t total_steps = (n + options.batch_sequences - 1) / options.batch_sequences * options.epochs;
  std::size_t step = 0;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    std::shuffle(order_.begin(), order_.end(), rng_);
    double epoch_error = 0;
    for (std::size_t first = 0; first < n; first += options.batch_sequences) {
      const std::size_t last = std::min(n, first + options.batch_sequences);
      double batch_elements = 0;
      for (std::size_t b = first; b < last; ++b) batch_elements += static_cast<double>(target[order_[b]].size());
      grads.Zero();
      for (std::size_t b = first; b < last; ++b) {
        const std::size_t i = order_[b];
        const int tokens = static_cast<int>(sequences[i].size());
        y.resize(q_in[i].size());
        dy.resize(q_in[i].size());
        LayerForward(c, w, q_in[i].data(), tokens, y.data(), &saved);
        const float k = static_cast<float>(2.0 / batch_elements);  // d/dy of the batch's mean squared error
        for (std::size_t j = 0; j < y.size(); ++j) dy[j] = k * (y[j] - target[i][j]);
        epoch_error += SquaredError(y, target[i]);
        LayerBackward(c, w, saved, dy.data(), grads, nullptr);
      }
      const float lr_factor = LrFactor(options.schedule, step++, total_steps);
      pool.ParallelFor(static_cast<int64_t>(trainable.size()), [&](int64_t begin, int64_t end) {
        for (int64_t m = begin; m < end; ++m) {
          trainable[m].AccumulateGradient(*grad_of[m]);
          trainable[m].Step(options.adam, lr_factor);
          trainable[m].Dequantize(dense[m]);
        }
      });
      if (train_norms) {
        att_adam.Step(att_gain, grads.rms_att, options.adam.norm_lr * lr_factor, options.adam);
        ffn_adam.Step(ffn_gain, grads.rms_ffn, options.adam.norm_lr * lr_factor, options.adam);
      }
    }
    report.epoch_error.push_back(epoch_error / elements);
  }

  // Keep the trained codes (with fp16 scales) unless they do worse than the layer's own, and
  // move both models' inputs one layer on.
  std::vector<W2Matrix> before;
  for (const W2Matrix* m : linears) before.push_back(*m);
  std::vector<float> att_gain_trained = att_gain, ffn_gain_trained = ffn_gain;
  const auto use = [&](std::vector<W2Matrix> matrices, const std::vector<float>& att, const std::vector<float>& ffn) {
    att_gain = att;
    ffn_gain = ffn;
    for (std::size_t m = 0; m < linears.size(); ++m) {
      W2Matrix& out = *linears[m];
      out = std::move(matrices[m]);
      for (int r = 0; r < out.shape.rows; ++r) {
        DequantizeW2Row(out.view(), r, std::span<float>(dense[m].data() + static_cast<std::size_t>(r) * out.shape.cols, out.shape.cols));
      }
    }
    double error = 0;
    for (std::size_t i = 0; i < n; ++i) {
      y.resize(q_in[i].size());
      LayerForward(c, w, q_in[i].data(), static_cast<int>(sequences[i].size()), y.data());
      error += SquaredError(y, target[i]);
      q_out_[i].swap(y);
    }
    return error / elements;
  };
  std::vector<W2Matrix> trained;
  for (const TrainableW2& t : trainable) trained.push_back(t.Export());
  report.error_after = use(std::move(trained), att_gain_trained, ffn_gain_trained);
  if (report.error_after >= report.error_before) {
    report.kept_original = true;
    report.error_after = use(std::move(before), att_gain_before, ffn_gain_before);
  }
  q_in.swap(q_out_);
  fp_in.swap(target_);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

absl::Status RefineBlocks(const Model& model, std::span<const std::vector<int>> sequences, const BlockApOptions& options,
                          PackedContents& packed, std::span<const std::vector<float>> positions,
                          const std::function<void(const BlockApReport&)>& on_layer) {
  const LlamaConfig& c = model.config;
  RETURN_IF_ERROR(BlockRefiner::Validate(c, sequences, options));
  if (packed.config.dim != c.dim || packed.config.n_layers != c.n_layers || packed.embedding.size() != static_cast<std::size_t>(c.vocab_size) * c.dim) {
    return absl::InvalidArgumentError("the packed model is not a quantized form of this model");
  }
  if (packed.norms.size() != 2 * static_cast<std::size_t>(c.n_layers) + 1) {
    return absl::InvalidArgumentError("the packed model lacks its layers' norm gains");
  }
  if (!positions.empty() && positions.size() != packed.linears.size()) {
    return absl::InvalidArgumentError("grid positions must be given for every linear or none");
  }
  // Every layer's matrices are found before any is changed: an error leaves `packed` as it was.
  std::vector<std::vector<std::size_t>> layer_slots;
  for (int layer = 0; layer < c.n_layers; ++layer) {
    absl::StatusOr<std::vector<std::size_t>> slots = LayerLinearSlots(packed, layer);
    if (!slots.ok()) return slots.status();
    for (std::size_t slot : *slots) {
      const W2Shape& shape = packed.linears[slot].second.shape;
      if (!positions.empty() && positions[slot].size() != static_cast<std::size_t>(shape.rows) * shape.cols) {
        return absl::InvalidArgumentError(absl::StrCat("grid positions of linear ", slot, " do not match its shape"));
      }
    }
    layer_slots.push_back(*std::move(slots));
  }
  Activations fp_in(sequences.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) fp_in[i] = EmbedSequence(model.weights.token_embedding, c.dim, sequences[i]);
  BlockRefiner refiner(c, sequences, options, EmbedQuantized(packed, sequences));
  for (int layer = 0; layer < c.n_layers; ++layer) {
    std::vector<W2Matrix*> linears;
    std::vector<const std::vector<float>*> layer_positions;
    for (std::size_t slot : layer_slots[layer]) {
      linears.push_back(&packed.linears[slot].second);
      if (!positions.empty()) layer_positions.push_back(&positions[slot]);
    }
    const LayerWeights& fp = model.weights.layers[layer];
    std::vector<float> att_gain(fp.rms_att, fp.rms_att + c.dim), ffn_gain(fp.rms_ffn, fp.rms_ffn + c.dim);
    const BlockApReport report = refiner.Refine(layer, fp, fp_in, linears, layer_positions, att_gain, ffn_gain);
    packed.norms[2 * static_cast<std::size_t>(layer)] = std::move(att_gain);
    packed.norms[2 * static_cast<std::size_t>(layer) + 1] = std::move(ffn_gain);
    if (on_layer) on_layer(report);
  }
  return absl::OkStatus();
}

std::vector<float> EmbedSequence(const float* embedding, int dim, const std::vector<int>& tokens) {
  std::vector<float> x(tokens.size() * dim);
  for (std::size_t t = 0; t < tokens.size(); ++t) std::copy_n(embedding + static_cast<std::size_t>(tokens[t]) * dim, dim, x.begin() + t * dim);
  return x;
}

std::vector<std::vector<float>> EmbedQuantized(const PackedContents& packed, std::span<const std::vector<int>> sequences) {
  const int dim = packed.config.dim;
  std::vector<std::vector<float>> q_in(sequences.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    q_in[i].resize(sequences[i].size() * dim);
    for (std::size_t t = 0; t < sequences[i].size(); ++t) {
      const std::size_t row = static_cast<std::size_t>(sequences[i][t]) * dim;
      for (int j = 0; j < dim; ++j) q_in[i][t * dim + j] = Fp16ToFloat(packed.embedding[row + j]);
    }
  }
  return q_in;
}

}  // namespace accllm
