#include "runtime/quant/train/end_to_end.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/quant/linalg.h"
#include "runtime/common/status_macros.h"
#include "runtime/quant/train/layer_backprop.h"
#include "runtime/quant/train/layer_linears.h"

namespace accllm {
namespace {

// A W2 matrix whose codes stay and whose group scales train: each weight is s_g * level, the
// level (2q - z) read back from the dequantized matrix (exact: an fp16 scale times a small integer).
class ScaleOnlyW2 {
 public:
  explicit ScaleOnlyW2(const W2Matrix& m)
      : base_(m),
        rows_(m.shape.rows),
        cols_(m.shape.cols),
        group_(m.shape.group_size),
        groups_(m.shape.groups()),
        levels_(static_cast<std::size_t>(rows_) * cols_),
        scales_(static_cast<std::size_t>(rows_) * groups_),
        grad_(scales_.size()),
        adam_(scales_.size()) {
    const W2View view = m.view();
    std::vector<float> row(cols_);
    for (int r = 0; r < rows_; ++r) {
      DequantizeW2Row(view, r, row);
      for (int g = 0; g < groups_; ++g) scales_[Group(r, g * group_)] = Fp16ToFloat(view.scales[W2ParamIndex(r, g, groups_)]);
      for (int c = 0; c < cols_; ++c) {
        const float s = scales_[Group(r, c)];
        levels_[static_cast<std::size_t>(r) * cols_ + c] = s > 0 ? static_cast<int8_t>(std::nearbyint(row[c] / s)) : 0;
      }
    }
  }

  void Dequantize(std::span<float> out) const {
    for (int r = 0; r < rows_; ++r) {
      for (int c = 0; c < cols_; ++c) {
        const std::size_t i = static_cast<std::size_t>(r) * cols_ + c;
        out[i] = scales_[Group(r, c)] * levels_[i];
      }
    }
  }

  // d s_g += sum over the group of d w * level.
  void AccumulateGradient(std::span<const float> d_weights) {
    for (int r = 0; r < rows_; ++r) {
      for (int c = 0; c < cols_; ++c) {
        const std::size_t i = static_cast<std::size_t>(r) * cols_ + c;
        grad_[Group(r, c)] += d_weights[i] * levels_[i];
      }
    }
  }

  void Step(float lr, const AdamOptions& options) {
    adam_.Step(scales_, grad_, lr, options);
    for (float& s : scales_) s = std::max(s, 1e-7f);
  }

  // Scales rounded to fp16, as they will be stored (so the model trains on what it serves).
  void RoundScales() {
    for (float& s : scales_) s = Fp16ToFloat(FloatToFp16(s));
  }

  W2Matrix Export() const {
    W2Matrix m = base_;
    const W2View view = base_.view();
    for (int r = 0; r < rows_; ++r) {
      for (int g = 0; g < groups_; ++g) {
        SetW2Params(m, r, g, {Fp16ToFloat(FloatToFp16(scales_[Group(r, g * group_)])), view.zeros[W2ParamIndex(r, g, groups_)]});
      }
    }
    return m;
  }

 private:
  std::size_t Group(int r, int c) const { return static_cast<std::size_t>(r) * groups_ + c / group_; }

  W2Matrix base_;
  int rows_, cols_, group_, groups_;
  std::vector<int8_t> levels_;
  std::vector<float> scales_, grad_;
  AdamState adam_;
};

std::vector<float> ToFloats(const std::vector<uint16_t>& fp16) {
  std::vector<float> out(fp16.size());
  for (std::size_t i = 0; i < fp16.size(); ++i) out[i] = Fp16ToFloat(fp16[i]);
  return out;
}

// The fp32 model's final states (after the final norm), one (tokens x dim) matrix per sequence.
std::vector<std::vector<float>> TeacherStates(const Model& teacher, std::span<const std::vector<int>> sequences) {
  const LlamaConfig& c = teacher.config;
  std::vector<std::vector<float>> out(sequences.size());
  std::vector<float> x, y, inv_rms;
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    const int T = static_cast<int>(sequences[i].size());
    x.resize(static_cast<std::size_t>(T) * c.dim);
    y.resize(x.size());
    for (int t = 0; t < T; ++t) {
      std::copy_n(teacher.weights.token_embedding + static_cast<std::size_t>(sequences[i][t]) * c.dim, c.dim, x.begin() + t * c.dim);
    }
    for (int l = 0; l < c.n_layers; ++l) {
      LayerForward(c, teacher.weights.layers[l], x.data(), T, y.data());
      x.swap(y);
    }
    out[i].resize(x.size());
    inv_rms.resize(T);
    RmsNormRows(x.data(), teacher.weights.rms_final, T, c.dim, c.norm_eps, out[i].data(), inv_rms.data());
  }
  return out;
}

// KL(teacher || student) summed over the rows of two (rows x vocab) logit matrices; with
// `d_student`, also its gradient with respect to the student's logits, times `k`.
double KlDivergence(const float* teacher, const float* student, int rows, int vocab, ThreadPool& pool, float k = 0,
                    float* d_student = nullptr) {
  std::vector<double> per_row(rows);
  pool.ParallelFor(rows, [&](int64_t begin, int64_t end) {
    std::vector<float> pt(vocab);
    for (int64_t t = begin; t < end; ++t) {
      const float* lt = teacher + t * vocab;
      const float* ls = student + t * vocab;
      const float mt = *std::max_element(lt, lt + vocab), ms = *std::max_element(ls, ls + vocab);
      double zt = 0, zs = 0;
      for (int v = 0; v < vocab; ++v) {
        pt[v] = std::exp(lt[v] - mt);
        zt += pt[v];
        zs += std::exp(ls[v] - ms);
      }
      const double log_zt = std::log(zt), log_zs = std::log(zs);
      double kl = 0;
      for (int v = 0; v < vocab; ++v) {
        const double p = pt[v] / zt;
        if (p > 0) kl += p * ((lt[v] - mt - log_zt) - (ls[v] - ms - log_zs));
        if (d_student != nullptr) {
          const double q = std::exp(ls[v] - ms - log_zs);
          d_student[t * vocab + v] = static_cast<float>(k * (q - p));
        }
      }
      per_row[t] = kl;
    }
  });
  return std::accumulate(per_row.begin(), per_row.end(), 0.0);
}

}  // namespace

absl::Status TrainScalesEndToEnd(const Model& teacher, std::span<const std::vector<int>> sequences,
                                 const EndToEndOptions& options, PackedContents& packed, EndToEndReport* report) {
  const auto start = std::chrono::steady_clock::now();
  const LlamaConfig& c = teacher.config;
  const int D = c.dim, V = c.vocab_size, L = c.n_layers;
  if (sequences.empty()) return absl::InvalidArgumentError("end-to-end training needs calibration sequences");
  if (options.epochs < 1 || options.batch_sequences < 1) return absl::InvalidArgumentError("epochs and batch must be positive");
  if (packed.config.dim != D || packed.config.n_layers != L || packed.config.vocab_size != V ||
      packed.embedding.size() != static_cast<std::size_t>(V) * D || packed.norms.size() != 2 * static_cast<std::size_t>(L) + 1) {
    return absl::InvalidArgumentError("the packed model is not a quantized form of this model");
  }
  for (const auto& s : sequences) {
    if (s.empty() || static_cast<int>(s.size()) > c.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("calibration sequences need 1..", c.max_seq_len, " tokens"));
    }
    for (int t : s) {
      if (t < 0 || t >= V) return absl::InvalidArgumentError(absl::StrCat("token id ", t, " out of range"));
    }
  }
  std::vector<std::size_t> slots;  // layer-major, kLayerLinearKinds order
  for (int l = 0; l < L; ++l) {
    ASSIGN_OR_RETURN(const std::vector<std::size_t> layer_slots, LayerLinearSlots(packed, l));
    slots.insert(slots.end(), layer_slots.begin(), layer_slots.end());
  }

  SetGemmThreads(options.threads);
  ThreadPool pool(options.threads);
  std::vector<ScaleOnlyW2> matrices;
  std::vector<std::vector<float>> dense;
  for (std::size_t slot : slots) {
    matrices.emplace_back(packed.linears[slot].second);
    const W2Shape& shape = packed.linears[slot].second.shape;
    dense.emplace_back(static_cast<std::size_t>(shape.rows) * shape.cols);
    matrices.back().Dequantize(dense.back());
  }
  std::vector<LayerWeights> layers(L);
  for (int l = 0; l < L; ++l) {
    LayerWeights norms{};
    norms.rms_att = packed.norms[2 * l].data();
    norms.rms_ffn = packed.norms[2 * l + 1].data();
    layers[l] = WithLinears(norms, std::span(dense).subspan(static_cast<std::size_t>(l) * 7, 7));
  }
  const std::vector<float> embedding = ToFloats(packed.embedding);
  const std::vector<float> classifier = packed.classifier.empty() ? embedding : ToFloats(packed.classifier);
  const float* final_gain = packed.norms.back().data();
  const std::vector<std::vector<float>> teacher_states = TeacherStates(teacher, sequences);

  std::vector<LayerActivations> saved(L);
  std::vector<float> x, y, xn, inv_rms, teacher_logits, logits, d_logits, dx, d_prev;
  // The student's logits for sequence i into `logits`; its final state in x (before the norm),
  // xn (after); with `keep`, every layer's activations in `saved`.
  const auto forward = [&](std::size_t i, bool keep) {
    const std::vector<int>& seq = sequences[i];
    const int T = static_cast<int>(seq.size());
    x.resize(static_cast<std::size_t>(T) * D);
    y.resize(x.size());
    for (int t = 0; t < T; ++t) std::copy_n(embedding.begin() + static_cast<std::size_t>(seq[t]) * D, D, x.begin() + t * D);
    for (int l = 0; l < L; ++l) {
      LayerForward(c, layers[l], x.data(), T, y.data(), keep ? &saved[l] : nullptr);
      x.swap(y);
    }
    xn.resize(x.size());
    inv_rms.resize(T);
    RmsNormRows(x.data(), final_gain, T, D, c.norm_eps, xn.data(), inv_rms.data());
    logits.resize(static_cast<std::size_t>(T) * V);
    Gemm(Trans::kNo, Trans::kYes, T, V, D, 1.0f, xn.data(), D, classifier.data(), D, 0.0f, logits.data(), V);
    teacher_logits.resize(logits.size());
    Gemm(Trans::kNo, Trans::kYes, T, V, D, 1.0f, teacher_states[i].data(), D, teacher.weights.classifier, D, 0.0f,
         teacher_logits.data(), V);
  };
  double positions = 0;
  for (const auto& s : sequences) positions += static_cast<double>(s.size());
  const auto mean_kl = [&] {
    double kl = 0;
    for (std::size_t i = 0; i < sequences.size(); ++i) {
      forward(i, false);
      kl += KlDivergence(teacher_logits.data(), logits.data(), static_cast<int>(sequences[i].size()), V, pool);
    }
    return kl / positions;
  };

  EndToEndReport r;
  r.kl_before = mean_kl();
  const std::size_t n = sequences.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(options.seed);
  const std::size_t total_steps = (n + options.batch_sequences - 1) / options.batch_sequences * options.epochs;
  std::size_t step = 0;
  LayerGradients grads(c);
  std::vector<std::vector<float>*> grad_of = {&grads.wq, &grads.wk, &grads.wv, &grads.wo, &grads.w1, &grads.w2, &grads.w3};
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    double epoch_kl = 0;
    for (std::size_t first = 0; first < n; first += options.batch_sequences) {
      const std::size_t last = std::min(n, first + options.batch_sequences);
      double batch_positions = 0;
      for (std::size_t b = first; b < last; ++b) batch_positions += static_cast<double>(sequences[order[b]].size());
      for (std::size_t b = first; b < last; ++b) {
        const std::size_t i = order[b];
        const int T = static_cast<int>(sequences[i].size());
        forward(i, true);
        d_logits.resize(logits.size());
        epoch_kl += KlDivergence(teacher_logits.data(), logits.data(), T, V, pool, static_cast<float>(1.0 / batch_positions),
                                 d_logits.data());
        // Back through the classifier and the final norm, then the layers, last to first.
        std::vector<float> d_xn(x.size());
        Gemm(Trans::kNo, Trans::kNo, T, D, V, 1.0f, d_logits.data(), V, classifier.data(), D, 0.0f, d_xn.data(), D);
        dx.assign(x.size(), 0.0f);
        RmsNormRowsBackward(x.data(), final_gain, inv_rms.data(), d_xn.data(), T, D, dx.data());
        d_prev.resize(dx.size());
        for (int l = L - 1; l >= 0; --l) {
          grads.Zero();
          LayerBackward(c, layers[l], saved[l], dx.data(), grads, l > 0 ? d_prev.data() : nullptr);
          pool.ParallelFor(7, [&](int64_t begin, int64_t end) {
            for (int64_t m = begin; m < end; ++m) matrices[static_cast<std::size_t>(l) * 7 + m].AccumulateGradient(*grad_of[m]);
          });
          dx.swap(d_prev);
        }
      }
      const float lr = options.scale_lr * LrFactor(options.schedule, step++, total_steps);
      pool.ParallelFor(static_cast<int64_t>(matrices.size()), [&](int64_t begin, int64_t end) {
        for (int64_t m = begin; m < end; ++m) {
          matrices[m].Step(lr, AdamOptions{});
          matrices[m].Dequantize(dense[m]);
        }
      });
    }
    r.epoch_kl.push_back(epoch_kl / positions);
  }

  // Judge the scales as they will be stored; keep the given ones unless those do better.
  for (std::size_t m = 0; m < matrices.size(); ++m) {
    matrices[m].RoundScales();
    matrices[m].Dequantize(dense[m]);
  }
  r.kl_after = mean_kl();
  r.kept_original = r.kl_after >= r.kl_before;
  if (!r.kept_original) {
    for (std::size_t m = 0; m < matrices.size(); ++m) packed.linears[slots[m]].second = matrices[m].Export();
  } else {
    r.kl_after = r.kl_before;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (report != nullptr) *report = std::move(r);
  return absl::OkStatus();
}

}  // namespace accllm
