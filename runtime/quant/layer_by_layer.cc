#include "runtime/quant/layer_by_layer.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/status_macros.h"
#include "runtime/quant/linalg.h"
#include "runtime/quant/rotation.h"
#include "runtime/quant/train/layer_backprop.h"
#include "runtime/quant/train/layer_linears.h"

namespace accllm {
namespace {

using Input = ForwardObserver::Input;

// Calibration's Gram products take at most this many tokens at a time (InputStats::AddLower).
constexpr int kGramRows = 512;

std::vector<float> Read(const WeightSource& source, const TensorId& id) {
  std::vector<float> t(static_cast<std::size_t>(TensorElements(source.config(), id.kind)));
  source.Fill(id, t);
  return t;
}

// One layer's weights, owned, in the form the packed model serves (rotated when asked).
struct OwnedLayer {
  std::vector<float> rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3;
  LayerWeights view() const {
    return {rms_att.data(), wq.data(), wk.data(), wv.data(), wo.data(), rms_ffn.data(), w1.data(), w2.data(), w3.data()};
  }
  std::vector<float>& Linear(TensorKind kind) {
    switch (kind) {
      case TensorKind::kWq: return wq;
      case TensorKind::kWk: return wk;
      case TensorKind::kWv: return wv;
      case TensorKind::kWo: return wo;
      case TensorKind::kW1: return w1;
      case TensorKind::kW2: return w2;
      default: return w3;
    }
  }
};

OwnedLayer ReadLayer(const WeightSource& source, int layer, const ResidualRotation* rotation, int ffn_block) {
  const LlamaConfig& c = source.config();
  OwnedLayer w;
  const auto read = [&](TensorKind kind) { return Read(source, {kind, layer}); };
  w.rms_att = read(TensorKind::kAttnNorm);
  w.rms_ffn = read(TensorKind::kFfnNorm);
  for (TensorKind kind : {TensorKind::kWq, TensorKind::kWk, TensorKind::kWv, TensorKind::kWo, TensorKind::kW1,
                          TensorKind::kW2, TensorKind::kW3}) {
    w.Linear(kind) = read(kind);
  }
  if (rotation == nullptr) return w;
  // As RotateResidualStream: gains folded into the readers, writers rotated on their outputs.
  const auto reader = [&](std::vector<float>& t, const std::vector<float>& gain, int rows) {
    std::vector<float> rotated(t.size());
    rotation->Reader(t.data(), gain.data(), rows, rotated.data());
    t = std::move(rotated);
  };
  const auto writer = [&](std::vector<float>& t, int cols) {
    std::vector<float> rotated(t.size());
    rotation->Writer(t.data(), cols, rotated.data());
    t = std::move(rotated);
  };
  reader(w.wq, w.rms_att, c.dim);
  reader(w.wk, w.rms_att, c.kv_dim());
  reader(w.wv, w.rms_att, c.kv_dim());
  writer(w.wo, c.dim);
  reader(w.w1, w.rms_ffn, c.hidden_dim);
  reader(w.w3, w.rms_ffn, c.hidden_dim);
  writer(w.w2, c.hidden_dim);
  if (ffn_block > 0) {
    for (int r = 0; r < c.dim; ++r) BlockHadamard(w.w2.data() + static_cast<int64_t>(r) * c.hidden_dim, c.hidden_dim, ffn_block);
  }
  std::fill(w.rms_att.begin(), w.rms_att.end(), 1.0f);
  std::fill(w.rms_ffn.begin(), w.rms_ffn.end(), 1.0f);
  return w;
}

void AddGram(InputStats& stats, const std::vector<float>& x, int tokens, int cols, std::vector<float>& scratch) {
  for (int t0 = 0; t0 < tokens; t0 += kGramRows) {
    stats.AddLower(x.data() + static_cast<std::size_t>(t0) * cols, std::min(kGramRows, tokens - t0), cols, scratch);
  }
}

}  // namespace

absl::StatusOr<PackedContents> QuantizeLayerByLayer(const WeightSource& source,
                                                    const std::vector<std::vector<int>>& sequences,
                                                    const LayerByLayerOptions& options,
                                                    const LayerByLayerProgress& progress) {
  const LlamaConfig& in_config = source.config();
  const bool needs_stats = options.quantize.method == QuantMethod::kGptq || options.quantize.prune == PruneMethod::kWanda;
  if (needs_stats && sequences.empty()) return absl::InvalidArgumentError("GPTQ and Wanda need calibration data");
  if (in_config.ffn_hadamard_block != 0 && options.rotate) {
    return absl::InvalidArgumentError("the model is rotated already (its down projection reads Hadamard-transformed input)");
  }
  if (options.rotate && !IsPowerOfTwo(in_config.dim)) {
    return absl::InvalidArgumentError(absl::StrCat("rotating the residual stream needs a power-of-two width, not ", in_config.dim));
  }
  if (options.ffn_block != 0 &&
      (!options.rotate || !IsPowerOfTwo(options.ffn_block) || in_config.hidden_dim % options.ffn_block != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("a Hadamard block of ", options.ffn_block, " needs --rotate and must divide hidden_dim ",
                                                   in_config.hidden_dim));
  }
  for (const std::vector<int>& seq : sequences) {
    if (seq.empty() || static_cast<int>(seq.size()) > in_config.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("a calibration sequence of ", seq.size(), " tokens (1 to ",
                                                     in_config.max_seq_len, " allowed)"));
    }
    for (int token : seq) {
      if (token < 0 || token >= in_config.vocab_size) return absl::InvalidArgumentError(absl::StrCat("token id ", token, " out of range"));
    }
  }
  if (options.block_ap) {
    if (options.quantize.method != QuantMethod::kGptq) return absl::InvalidArgumentError("block reconstruction needs GPTQ");
    if (options.sequential) return absl::InvalidArgumentError("layer by layer, block reconstruction runs on the fp32 model's statistics, not sequential ones");
    RETURN_IF_ERROR(BlockRefiner::Validate(in_config, sequences, options.block_ap_options));
  }
  LlamaConfig c = in_config;
  if (options.rotate) {
    c.shared_classifier = false;
    c.ffn_hadamard_block = options.ffn_block;
  }
  const std::unique_ptr<ResidualRotation> rotation =
      options.rotate ? std::make_unique<ResidualRotation>(c.dim, options.rotation_seed) : nullptr;
  ASSIGN_OR_RETURN(std::unique_ptr<LinearQuantizer> quantizer, LinearQuantizer::Create(c, options.quantize));
  const ScopedGemmThreads gemm_threads(options.quantize.threads);

  PackedContents out;
  out.config = c;
  std::vector<std::vector<float>> hidden(sequences.size());  // each sequence's tokens x dim
  {
    std::vector<float> embedding = Read(source, {TensorKind::kTokenEmbedding, -1});
    if (rotation != nullptr) {
      for (int v = 0; v < c.vocab_size; ++v) rotation->Rotate(embedding.data() + static_cast<int64_t>(v) * c.dim);
    }
    for (std::size_t s = 0; s < sequences.size(); ++s) hidden[s] = EmbedSequence(embedding.data(), c.dim, sequences[s]);
    out.embedding = FloatsToFp16(embedding);
  }
  std::unique_ptr<BlockRefiner> refiner;
  if (options.block_ap) {
    refiner = std::make_unique<BlockRefiner>(c, sequences, options.block_ap_options, EmbedQuantized(out, sequences));
  }

  std::vector<TensorId> linears;
  for (const TensorId& id : AllTensors(c)) {
    if (IsLinear(id.kind)) linears.push_back(id);
  }
  int done = 0;
  std::vector<float> scratch, y;
  for (int l = 0; l < c.n_layers; ++l) {
    OwnedLayer w = ReadLayer(source, l, rotation.get(), options.ffn_block);
    const auto start = std::chrono::steady_clock::now();
    CalibrationStats stats;  // only this layer's entry is filled
    stats.inputs.resize(c.n_layers);
    for (int i = 0; i < 4; ++i) {
      InputStats& s = stats.inputs[l][i];
      s.cols = static_cast<Input>(i) == Input::kFfnDown ? c.hidden_dim : c.dim;
      if (needs_stats) s.gram.assign(static_cast<std::size_t>(s.cols) * s.cols, 0.0);
    }
    LayerActivations saved;
    saved.keep_probs = false;  // the linear layers' inputs only
    for (std::size_t s = 0; s < sequences.size() && needs_stats; ++s) {
      const int tokens = static_cast<int>(sequences[s].size());
      y.resize(hidden[s].size());
      LayerForward(c, w.view(), hidden[s].data(), tokens, y.data(), &saved);
      std::array<InputStats, 4>& in = stats.inputs[l];
      AddGram(in[static_cast<int>(Input::kAttention)], saved.a, tokens, c.dim, scratch);
      AddGram(in[static_cast<int>(Input::kAttentionOutput)], saved.o, tokens, c.dim, scratch);
      AddGram(in[static_cast<int>(Input::kFfn)], saved.b, tokens, c.dim, scratch);
      AddGram(in[static_cast<int>(Input::kFfnDown)], saved.h, tokens, c.hidden_dim, scratch);
      if (!options.sequential && !refiner) hidden[s].swap(y);  // the fp32 model's next hidden states
    }
    for (InputStats& s : stats.inputs[l]) {
      if (needs_stats) s.MirrorLower();
    }
    if (progress.on_calibrated) {
      progress.on_calibrated(l, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }

    std::vector<std::vector<float>> positions;  // where GPTQ rounded each weight: Block-AP's start
    for (const TensorId& id : linears) {
      if (id.layer != l) continue;
      std::vector<float>& weights = w.Linear(id.kind);
      LayerReport report;
      std::span<float> layer_positions;
      if (refiner) layer_positions = positions.emplace_back(weights.size());
      ASSIGN_OR_RETURN(W2Matrix m, quantizer->Quantize(id, weights, needs_stats ? &stats.For(l, id.kind) : nullptr,
                                                       layer_positions, &report));
      if (options.sequential) {  // the next layer reads what this one computes quantized
        for (int r = 0; r < m.shape.rows; ++r) {
          DequantizeW2Row(m.view(), r, std::span<float>(weights.data() + static_cast<int64_t>(r) * m.shape.cols, m.shape.cols));
        }
      }
      out.linears.emplace_back(id, std::move(m));
      if (progress.on_linear) progress.on_linear(report, ++done, static_cast<int>(linears.size()));
    }
    if (refiner) {
      // The slots are this layer's, in the order Block-AP takes them; so are the positions.
      ASSIGN_OR_RETURN(std::vector<std::size_t> slots, LayerLinearSlots(out, l));
      std::vector<W2Matrix*> matrices;
      std::vector<const std::vector<float>*> starts;
      for (std::size_t slot : slots) {
        matrices.push_back(&out.linears[slot].second);
        starts.push_back(&positions[slot - (out.linears.size() - positions.size())]);
      }
      std::vector<float> att_gain = w.rms_att, ffn_gain = w.rms_ffn;  // trained when asked
      const BlockApReport report = refiner->Refine(l, w.view(), hidden, matrices, starts, att_gain, ffn_gain);
      w.rms_att = std::move(att_gain);
      w.rms_ffn = std::move(ffn_gain);
      if (progress.on_refined) progress.on_refined(report);
    }
    if (options.sequential && needs_stats) {
      for (std::size_t s = 0; s < sequences.size(); ++s) {
        y.resize(hidden[s].size());
        LayerForward(c, w.view(), hidden[s].data(), static_cast<int>(sequences[s].size()), y.data());
        hidden[s].swap(y);
      }
    }
    out.norms.push_back(std::move(w.rms_att));
    out.norms.push_back(std::move(w.rms_ffn));
  }

  std::vector<float> final_norm = Read(source, {TensorKind::kFinalNorm, -1});
  if (rotation != nullptr) {
    const std::vector<float> classifier = Read(source, {TensorKind::kClassifier, -1});
    std::vector<float> rotated(classifier.size());
    rotation->Reader(classifier.data(), final_norm.data(), c.vocab_size, rotated.data());
    out.classifier = FloatsToFp16(rotated);
    std::fill(final_norm.begin(), final_norm.end(), 1.0f);
  } else if (!c.shared_classifier) {
    out.classifier = FloatsToFp16(Read(source, {TensorKind::kClassifier, -1}));
  }
  out.norms.push_back(std::move(final_norm));
  SetPackedMetadata(options.quantize, out);
  return out;
}

}  // namespace accllm
