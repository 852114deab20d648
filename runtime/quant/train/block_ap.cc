#include "runtime/quant/train/block_ap.h"

#include <algorithm>
#include <atomic>
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

void BlockRefiner::ForEachSequence(std::size_t count, const std::function<void(int, std::size_t)>& fn) {
  const int threads = pool_.threads();
  if (threads > 1 && count >= static_cast<std::size_t>(threads)) {
    // Products this small leave threaded BLAS waiting on itself (half the time on 2 cores);
    // a sequence per thread keeps every core in its own products. Sequences differ in length,
    // so each thread takes the next one when it is done.
    const ScopedGemmThreads single_threaded_products(1);
    std::atomic<std::size_t> next{0};
    pool_.ParallelFor(threads, [&](int64_t begin, int64_t end) {
      for (int64_t thread = begin; thread < end; ++thread) {
        for (std::size_t i; (i = next.fetch_add(1)) < count;) fn(static_cast<int>(thread), i);
      }
    });
    return;
  }
  for (std::size_t i = 0; i < count; ++i) fn(0, i);
}

BlockApReport BlockRefiner::Refine(int layer, const LayerWeights& fp, Activations& fp_in, std::span<W2Matrix* const> linears,
                                   std::span<const std::vector<float>* const> positions, std::vector<float>& att_gain,
                                   std::vector<float>& ffn_gain) {
  const LlamaConfig& c = c_;
  const std::span<const std::vector<int>> sequences = sequences_;
  const BlockApOptions& options = options_;
  const std::size_t n = sequences.size();
  SetGemmThreads(options.threads);
  Activations& q_in = q_in_;
  const auto tokens_of = [&](std::size_t i) { return static_cast<int>(sequences[i].size()); };
  const auto start = std::chrono::steady_clock::now();
  BlockApReport report;
  report.layer = layer;
  // Every sequence's figures are summed in sequence order, whichever thread computed them.
  std::vector<double> per_sequence(n);
  const auto sum = [&] { return std::accumulate(per_sequence.begin(), per_sequence.end(), 0.0); };
  double elements = 0;
  for (std::size_t i = 0; i < n; ++i) {
    target_[i].resize(fp_in[i].size());
    elements += static_cast<double>(target_[i].size());
  }
  scratch_.resize(pool_.threads());
  for (LayerActivations& a : scratch_) a.keep_probs = false;
  ForEachSequence(n, [&](int thread, std::size_t i) {
    LayerForward(c, fp, fp_in[i].data(), tokens_of(i), target_[i].data(), &scratch_[thread]);
    double energy = 0;
    for (float v : target_[i]) energy += double{v} * v;
    per_sequence[i] = energy;
  });
  report.target_energy = sum() / elements;
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
  // The layer's output error over all sequences; q_out_ holds the outputs.
  const auto output_error = [&] {
    ForEachSequence(n, [&](int thread, std::size_t i) {
      q_out_[i].resize(q_in[i].size());
      LayerForward(c, w, q_in[i].data(), tokens_of(i), q_out_[i].data(), &scratch_[thread]);
      per_sequence[i] = SquaredError(q_out_[i], target[i]);
    });
    return sum() / elements;
  };
  report.error_before = output_error();

  const bool train_norms = options.adam.norm_lr > 0;
  while (work_.size() < static_cast<std::size_t>(options.batch_sequences)) work_.emplace_back(c, train_norms);
  AdamState att_adam(c.dim), ffn_adam(c.dim);
  const auto grad_of = [](LayerGradients& g, std::size_t m) {
    std::vector<float>* of[] = {&g.wq, &g.wk, &g.wv, &g.wo, &g.w1, &g.w2, &g.w3};
    return of[m];
  };
  const std::size_t total_steps = (n + options.batch_sequences - 1) / options.batch_sequences * options.epochs;
  std::size_t step = 0;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    std::shuffle(order_.begin(), order_.end(), rng_);
    double epoch_error = 0;
    for (std::size_t first = 0; first < n; first += options.batch_sequences) {
      const std::size_t count = std::min(n, first + options.batch_sequences) - first;
      double batch_elements = 0;
      for (std::size_t b = 0; b < count; ++b) batch_elements += static_cast<double>(target[order_[first + b]].size());
      const float k = static_cast<float>(2.0 / batch_elements);  // d/dy of the batch's mean squared error
      ForEachSequence(count, [&](int, std::size_t b) {
        SequenceWork& s = work_[b];
        const std::size_t i = order_[first + b];
        s.y.resize(q_in[i].size());
        s.dy.resize(q_in[i].size());
        LayerForward(c, w, q_in[i].data(), tokens_of(i), s.y.data(), &s.saved);
        for (std::size_t j = 0; j < s.y.size(); ++j) s.dy[j] = k * (s.y[j] - target[i][j]);
        s.error = SquaredError(s.y, target[i]);
        s.grads.Zero();
        LayerBackward(c, w, s.saved, s.dy.data(), s.grads, nullptr);
      });
      for (std::size_t b = 0; b < count; ++b) epoch_error += work_[b].error;
      const float lr_factor = LrFactor(options.schedule, step++, total_steps);
      // The seven matrices' updates (gradients summed over the batch in its order, gradient,
      // Adam step, dequantization) run side by side.
      pool_.ParallelFor(static_cast<int64_t>(trainable.size()), [&](int64_t begin, int64_t end) {
        for (int64_t m = begin; m < end; ++m) {
          std::vector<float>& g = *grad_of(work_[0].grads, m);
          for (std::size_t b = 1; b < count; ++b) {
            const std::vector<float>& more = *grad_of(work_[b].grads, m);
            for (std::size_t j = 0; j < g.size(); ++j) g[j] += more[j];
          }
          trainable[m].AccumulateGradient(g);
          trainable[m].Step(options.adam, lr_factor);
          trainable[m].Dequantize(dense[m]);
        }
      });
      if (train_norms) {
        LayerGradients& g = work_[0].grads;
        for (std::size_t b = 1; b < count; ++b) {
          for (int j = 0; j < c.dim; ++j) {
            g.rms_att[j] += work_[b].grads.rms_att[j];
            g.rms_ffn[j] += work_[b].grads.rms_ffn[j];
          }
        }
        att_adam.Step(att_gain, g.rms_att, options.adam.norm_lr * lr_factor, options.adam);
        ffn_adam.Step(ffn_gain, g.rms_ffn, options.adam.norm_lr * lr_factor, options.adam);
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
    return output_error();
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
