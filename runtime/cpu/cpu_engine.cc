#include "runtime/cpu/cpu_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/nn_ops.h"
#include "runtime/common/round.h"
#include "runtime/common/status_macros.h"
#include "runtime/cpu/cpu_attention.h"
#include "runtime/kv/kivi_simulation.h"

namespace accllm {
namespace {

// Inputs per W8 classifier scale: the W2 layers' group, so the A8 input has the same form.
constexpr int kW8ClassifierGroup = 128;

// In-place A8 round trip of one vector (what the W2 kernels see, as floats).
void FakeQuantizeA8(float* x, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0.0f) return;
  const float inverse = 127.0f / amax, scale = amax / 127.0f;
  for (int i = 0; i < n; ++i) x[i] = RoundHalfEven(x[i] * inverse) * scale;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuEngine>> CpuEngine::Create(EngineWeights weights, const CpuEngineOptions& options) {
  RETURN_IF_ERROR(ValidateConfig(weights.config));
  if (options.page_tokens <= 0 || options.max_step_tokens <= 0 || options.kv_pages < 0) {
    return absl::InvalidArgumentError("page_tokens and max_step_tokens must be positive, kv_pages >= 0");
  }
  if (options.lambda.sinks < 0 || options.lambda.window <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad Λ configuration: sinks ", options.lambda.sinks, ", window ",
                                                   options.lambda.window));
  }
  if (weights.config.head_size() % 2 != 0) return absl::InvalidArgumentError("head size must be even for KV4");
  if (options.kivi_group != 0) {
    const int g = options.kivi_group;
    if (options.kv_precision != KvPrecision::kF32 || g < 2 || g % 2 != 0 ||
        (options.lambda.window > 0 && options.lambda.window < g)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the KIVI simulation needs an fp32 cache, an even group of at least 2 tokens and a Λ window no "
          "shorter than the group (group ", g, ", window ", options.lambda.window, ")"));
    }
  }
  const CpuKernels* kernels = options.kernels;
  if (kernels == nullptr) {
    ASSIGN_OR_RETURN(kernels, SelectedKernels());
  }
  if (options.w8_classifier && weights.classifier.f16 != nullptr && !weights.classifier.w8) {
    LinearWeights& head = weights.classifier;
    ASSIGN_OR_RETURN(W8Matrix w8, QuantizeW8({head.f16, static_cast<std::size_t>(head.out) * head.in},
                                             {head.out, head.in, kW8ClassifierGroup}));
    auto owned = std::make_shared<const W8Matrix>(std::move(w8));
    head.w8 = owned->view();
    weights.storage.push_back(std::move(owned));
  }
  auto engine = std::unique_ptr<CpuEngine>(new CpuEngine(std::move(weights), options, *kernels));
  if (!engine->kv_.ok()) return absl::ResourceExhaustedError("cannot allocate the KV cache");
  const LlamaConfig& c = engine->weights_.config;
  const int64_t vectors = engine->kv_.VectorIndex(c.n_layers, 0, 0, 0);
  if (vectors > std::numeric_limits<int32_t>::max()) {  // attention runs name vectors in 32 bits
    return absl::InvalidArgumentError(absl::StrCat("a KV pool of ", vectors, " vectors is too large (at most 2^31 - 1)"));
  }
  return engine;
}

CpuEngine::CpuEngine(EngineWeights weights, const CpuEngineOptions& options, const CpuKernels& kernels)
    : weights_(std::move(weights)),
      options_(options),
      kernels_(&kernels),
      pool_threads_(options.threads, options.pin_threads),
      pool_(options.kv_pages > 0 ? options.kv_pages
                                 : SequenceKv::MaxPages(options.lambda, options.page_tokens, options.max_step_tokens,
                                                        weights_.config.max_seq_len)),
      kv_(weights_.config, pool_.total(), options.page_tokens, options.kv_precision,
          /*allocate=*/!options.step_offload) {
  rotate_kv_ = options.kv_precision == KvPrecision::kKv4 && options.kv4_rotation &&
               IsPowerOfTwo(weights_.config.head_size());
  const LlamaConfig& c = weights_.config;
  const std::size_t n = static_cast<std::size_t>(options.max_step_tokens);
  x_.resize(n * c.dim);
  xb_.resize(n * c.dim);
  q_.resize(n * c.dim);
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  att_.resize(n * c.dim);
  hb_.resize(n * c.hidden_dim);
  hb2_.resize(n * c.hidden_dim);
  positions_.resize(n);
  rope_.resize(n);
  token_runs_.resize(n);
  token_sink_runs_.resize(n);
  token_seq_.resize(n);
  kv_heads_done_ = std::make_unique<std::atomic<int>[]>(n);
}

void CpuEngine::RoundTripCompletedKiviGroups(int layer, int n) {
  const LlamaConfig& c = weights_.config;
  const int g = options_.kivi_group;
  std::vector<int> completing;  // tokens whose position ends a group
  for (int t = 0; t < n; ++t) {
    if ((positions_[t] + 1) % g == 0) completing.push_back(t);
  }
  pool_threads_.ParallelFor(static_cast<int64_t>(completing.size()) * c.n_kv_heads, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> vectors(g);
    for (int64_t item = begin; item < end; ++item) {
      const int t = completing[item / c.n_kv_heads], h = static_cast<int>(item % c.n_kv_heads);
      const int64_t first = positions_[t] + 1 - g;
      for (int i = 0; i < g; ++i) {
        const int64_t p = first + i;
        vectors[i] = kv_.VectorIndex(layer, token_seq_[t]->PageOf(p), h, static_cast<int>(p % options_.page_tokens));
      }
      RoundTripKiviGroup(kv_, vectors, c.head_size(), options_.kivi_exact_open_group);
    }
  });
}

std::string CpuEngine::name() const {
  if (options_.step_offload) {  // the device runs the steps; the host only plans them
    return absl::StrCat(options_.label, "(sequenced steps, ", KvPrecisionName(options_.kv_precision), ")");
  }
  return absl::StrCat(options_.label, "(", kernels_->name, ", ", pool_threads_.threads(), " threads, ",
                      KvPrecisionName(options_.kv_precision), ")");
}

A8Batch& CpuEngine::A8Buffer(InputSlot slot, int cols_padded, int group_size) {
  auto& batch = a8_[{slot, cols_padded, group_size}];
  if (!batch || batch->capacity() < options_.max_step_tokens) {
    batch = std::make_unique<A8Batch>(cols_padded, group_size, options_.max_step_tokens);
  }
  return *batch;
}

A8Batch* CpuEngine::QuantizeWhereMade(const LinearWeights& w, LinearInput& in) {
  if (!w.w2 || options_.fake_quantize_activations || options_.observe_linear_input) return nullptr;
  A8Batch& batch = A8Buffer(in.slot, w.w2->shape.cols_padded(), w.w2->shape.group_size);
  batch.Resize(in.n);  // sized first: the threads then write only their own tokens (not the count)
  in.quantized_into = &batch;
  return &batch;
}

const A8Batch& CpuEngine::QuantizedInput(int cols_padded, int group_size, int in_features, LinearInput& in) {
  A8Batch& batch = A8Buffer(in.slot, cols_padded, group_size);
  if (in.quantized_into != &batch) {  // a layer of another shape may have quantized it already
    batch.Resize(in.n);
    PerToken(in.n, [&](int t) {
      batch.Quantize(t, {in.x + t * in.ld, static_cast<std::size_t>(in_features)}, kernels_->a8_quantize);
    });
    in.quantized_into = &batch;
  }
  stage_clock_.Mark(StepStage::kA8Quantize);
  return batch;
}

void CpuEngine::Linear(const LinearWeights& w, LinearInput& in, float* y, int64_t ldy) {
  const LinearOutput output{&w, y, ldy};
  Linears({&output, 1}, in);
}

void CpuEngine::Linears(std::span<const LinearOutput> outputs, LinearInput& in) {
  const auto one_loop = [&](const LinearOutput& o) {
    const LinearWeights& first = *outputs[0].w;
    return o.w->w2 && o.w->w2->shape.cols_padded() == first.w2->shape.cols_padded() &&
           o.w->w2->shape.group_size == first.w2->shape.group_size;
  };
  const bool w2 = outputs[0].w->w2.has_value();
  if (outputs.size() > 1 && !(w2 && std::all_of(outputs.begin(), outputs.end(), one_loop))) {
    for (const LinearOutput& o : outputs) Linears({&o, 1}, in);
    return;
  }
  const StepStage stage = in.slot == kClassifierInput ? StepStage::kClassifier : StepStage::kLinear;
  if (w2) {
    const W2Shape& shape = outputs[0].w->w2->shape;
    const A8Batch& batch = QuantizedInput(shape.cols_padded(), shape.group_size, outputs[0].w->in, in);
    // Row tiles of all the layers, one after another.
    absl::InlinedVector<int64_t, 4> tile_offsets(outputs.size() + 1, 0);
    for (std::size_t m = 0; m < outputs.size(); ++m) tile_offsets[m + 1] = tile_offsets[m] + outputs[m].w->w2->shape.row_tiles();
    pool_threads_.ParallelFor(tile_offsets.back(), [&](int64_t begin, int64_t end) {
      for (std::size_t m = 0; m < outputs.size(); ++m) {
        const int64_t from = std::max(begin, tile_offsets[m]) - tile_offsets[m];
        const int64_t to = std::min(end, tile_offsets[m + 1]) - tile_offsets[m];
        if (from >= to) continue;
        kernels_->matmul_w2a8(*outputs[m].w->w2, batch, static_cast<int>(from), static_cast<int>(to), outputs[m].y,
                              outputs[m].ldy);
      }
    });
    stage_clock_.Mark(stage);
    return;
  }
  // One layer that is not W2.
  const LinearOutput& o = outputs[0];
  const LinearWeights& w = *o.w;
  if (w.w8) {
    const A8Batch& batch = QuantizedInput(w.w8->shape.cols_padded(), w.w8->shape.group_size, w.in, in);
    pool_threads_.ParallelFor(w.w8->shape.row_tiles(), [&](int64_t begin, int64_t end) {
      kernels_->matmul_w8a8(*w.w8, batch, static_cast<int>(begin), static_cast<int>(end), o.y, o.ldy);
    });
  } else if (w.f16 != nullptr) {
    pool_threads_.ParallelFor(w.out, [&](int64_t begin, int64_t end) {
      kernels_->matmul_f16(w.f16, w.in, in.x, in.n, in.ld, static_cast<int>(begin), static_cast<int>(end), o.y, o.ldy);
    });
  } else if (options_.f32_gemm && in.n >= options_.f32_gemm_min_tokens) {
    options_.f32_gemm(w.f32, w.out, w.in, in.x, in.n, in.ld, o.y, o.ldy);
  } else {
    pool_threads_.ParallelFor(w.out, [&](int64_t begin, int64_t end) {
      kernels_->matmul_f32(w.f32, w.in, in.x, in.n, in.ld, static_cast<int>(begin), static_cast<int>(end), o.y, o.ldy);
    });
  }
  stage_clock_.Mark(stage);
}

void CpuEngine::ResidualThenNorm(int n, bool add_residual, const float* weight, A8Batch* a8) {
  const LlamaConfig& c = weights_.config;
  PerToken(n, [&](int t) {
    float* x = &x_[int64_t{t} * c.dim];
    float* xb = &xb_[int64_t{t} * c.dim];
    kernels_->residual_rms_norm(x, add_residual ? xb : nullptr, xb, weight, c.dim, c.norm_eps);
    if (a8 != nullptr) a8->Quantize(t, {xb, static_cast<std::size_t>(c.dim)}, kernels_->a8_quantize);
  });
}

void CpuEngine::PerToken(int n, const std::function<void(int)>& fn) {
  if (n == 1) {
    fn(0);
    return;
  }
  pool_threads_.ParallelFor(n, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) fn(static_cast<int>(t));
  });
}

void CpuEngine::PlanPageRuns(int n) {
  const LambdaConfig& lambda = options_.lambda;
  const int page_tokens = options_.page_tokens;
  PerToken(n, [&](int t) {
    const int64_t m = positions_[t];
    const SequenceKv& seq = *token_seq_[t];
    const int64_t window_start = lambda.VisibleWindowStart(m), sink_end = lambda.SinkEnd(m);
    std::vector<PageRun>& runs = token_runs_[t];
    runs.clear();
    const auto add = [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end;) {
        const int slot = static_cast<int>(p % page_tokens);
        const int count = static_cast<int>(std::min<int64_t>(page_tokens - slot, end - p));
        runs.push_back({seq.PageOf(p), slot, count});
        p += count;
      }
    };
    add(0, sink_end);  // sinks outside the window see the query at a capped position (lambda_attention.h)
    token_sink_runs_[t] = static_cast<int>(runs.size());
    add(window_start, m + 1);
  });
}

void CpuEngine::PrepareAttention(int layer, int n) {
  const LlamaConfig& c = weights_.config;
  const int hs = c.head_size();
  AttentionBatch& b = attention_;
  b.layer = layer;
  b.head_size = hs;
  b.items = n * c.n_heads;
  b.item_runs.resize(b.items + 1);
  b.item_sink_runs.resize(b.items);
  b.item_runs[0] = 0;
  for (int t = 0, item = 0; t < n; ++t) {
    for (int h = 0; h < c.n_heads; ++h, ++item) {
      b.item_runs[item + 1] = b.item_runs[item] + static_cast<int32_t>(token_runs_[t].size());
      b.item_sink_runs[item] = token_sink_runs_[t];
    }
  }
  b.written_spans.clear();
  for (int page : written_pages_) {  // every head's slots of the page
    b.written_spans.emplace_back(kv_.VectorIndex(layer, page, 0, 0), int64_t{c.n_kv_heads} * options_.page_tokens);
  }
  b.run_start.resize(b.item_runs[b.items]);
  b.run_count.resize(b.run_start.size());
  b.q.resize(static_cast<std::size_t>(b.items) * hs);
  b.q_sink.resize(b.q.size());
}

void CpuEngine::FillAttentionRuns(int t, int kv_head) {
  const LlamaConfig& c = weights_.config;
  AttentionBatch& b = attention_;
  for (int h = kv_head * c.kv_mul(); h < (kv_head + 1) * c.kv_mul(); ++h) {
    int32_t r = b.item_runs[t * c.n_heads + h];
    for (const PageRun& run : token_runs_[t]) {
      b.run_start[r] = static_cast<int32_t>(kv_.VectorIndex(b.layer, run.page, kv_head, run.slot));
      b.run_count[r++] = run.count;
    }
  }
}

void CpuEngine::RopeQueries(int t, int kv_head) {
  const LlamaConfig& c = weights_.config;
  const int hs = c.head_size(), q_width = c.kv_mul() * hs;
  AttentionBatch& b = attention_;
  float* q = &q_[int64_t{t} * c.dim + int64_t{kv_head} * q_width];
  const std::size_t first_item = static_cast<std::size_t>(t) * c.n_heads + static_cast<std::size_t>(kv_head) * c.kv_mul();
  if (token_sink_runs_[t] > 0) {  // sinks outside the window meet the query at a capped position
    for (int j = 0; j < c.kv_mul(); ++j) {
      float* q_sink = &b.q_sink[(first_item + j) * hs];
      std::memcpy(q_sink, q + j * hs, hs * sizeof(float));
      Rope(q_sink, hs, hs, static_cast<int>(options_.lambda.SinkQueryPosition(positions_[t])), c.rope_theta);
      if (rotate_kv_) kernels_->hadamard(q_sink, hs);
    }
  }
  kernels_->rope(q, q_width, rope_[t].cos.data(), rope_[t].sin.data(), hs / 2);
  for (int j = 0; j < c.kv_mul(); ++j) {
    float* query = &b.q[(first_item + j) * hs];
    std::memcpy(query, q + j * hs, hs * sizeof(float));
    if (rotate_kv_) kernels_->hadamard(query, hs);  // into the cache's basis
  }
}

void CpuEngine::RopeAndWriteKv(int t, int kv_head) {
  const LlamaConfig& c = weights_.config;
  const int hs = c.head_size(), layer = attention_.layer;
  RopeQueries(t, kv_head);
  FillAttentionRuns(t, kv_head);
  float* k = &k_[int64_t{t} * c.kv_dim() + int64_t{kv_head} * hs];
  float* v = &v_[int64_t{t} * c.kv_dim() + int64_t{kv_head} * hs];
  kernels_->rope(k, hs, rope_[t].cos.data(), rope_[t].sin.data(), hs / 2);
  if (rotate_kv_) {
    kernels_->hadamard(k, hs);
    kernels_->hadamard(v, hs);
  }
  if (options_.kivi_group > 0 && !options_.kivi_exact_open_group) {
    RoundTripKv4({k, static_cast<std::size_t>(hs)});
    RoundTripKv4({v, static_cast<std::size_t>(hs)});
  }
  kv_.WriteHead(layer, token_seq_[t]->PageOf(positions_[t]), static_cast<int>(positions_[t] % options_.page_tokens),
                kv_head, k, v, kernels_->kv4_quantize);
}

void CpuEngine::RopeWriteAndAttend(int n, A8Batch* a8) {
  const LlamaConfig& c = weights_.config;
  const int hs = c.head_size(), kv_mul = c.kv_mul();
  for (int t = 0; t < n; ++t) kv_heads_done_[t].store(0, std::memory_order_relaxed);
  pool_threads_.ParallelFor(int64_t{n} * c.n_kv_heads, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int t = static_cast<int>(item / c.n_kv_heads), h = static_cast<int>(item % c.n_kv_heads);
      RopeAndWriteKv(t, h);
      const int32_t first = t * c.n_heads + h * kv_mul;
      RunAttentionItems(attention_, kv_, *kernels_, first, kv_mul, kSharedKeyBlock, att_.data());
      if (rotate_kv_) {  // back from the cache's basis
        for (int j = 0; j < kv_mul; ++j) kernels_->hadamard(&att_[(int64_t{first} + j) * hs], hs);
      }
      // The token's last KV head to finish quantizes it (its acquire sees the other heads' outputs).
      if (a8 != nullptr && kv_heads_done_[t].fetch_add(1, std::memory_order_acq_rel) + 1 == c.n_kv_heads) {
        a8->Quantize(t, {&att_[int64_t{t} * c.dim], static_cast<std::size_t>(c.dim)}, kernels_->a8_quantize);
      }
    }
  });
  stage_clock_.Mark(StepStage::kAttention);
}

void CpuEngine::Attention(int n, A8Batch* a8) {
  if (attention_.layer == 0) shared_keys_ = PlanSharedKeys(attention_, kSharedKeyBlock);
  RunAttentionOnCpu(attention_, kv_, *kernels_, pool_threads_, att_.data(), &shared_keys_);
  const int dim = weights_.config.dim, hs = weights_.config.head_size();
  if (rotate_kv_ || a8 != nullptr) {
    PerToken(n, [&](int t) {
      float* out = &att_[int64_t{t} * dim];
      if (rotate_kv_) {  // back from the cache's basis
        for (int h = 0; h < weights_.config.n_heads; ++h) kernels_->hadamard(out + h * hs, hs);
      }
      if (a8 != nullptr) a8->Quantize(t, {out, static_cast<std::size_t>(dim)}, kernels_->a8_quantize);
    });
  }
  stage_clock_.Mark(StepStage::kAttention);
}

absl::Status CpuEngine::Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) {
  const Entry entry{&seq, tokens};
  return Step({&entry, 1}, logits, /*every_token=*/false);
}

absl::Status CpuEngine::PrefillEveryLogit(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) {
  const Entry entry{&seq, tokens};
  return Step({&entry, 1}, logits, /*every_token=*/true);
}

absl::Status CpuEngine::Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens, std::span<float> logits) {
  if (seqs.size() != tokens.size()) return absl::InvalidArgumentError("one token per sequence");
  std::vector<Entry> entries;
  entries.reserve(seqs.size());
  for (std::size_t i = 0; i < seqs.size(); ++i) entries.push_back({seqs[i], tokens.subspan(i, 1)});
  return Step(entries, logits, /*every_token=*/false);
}

absl::Status CpuEngine::Step(std::span<const Entry> entries, std::span<float> logits, bool every_token) {
  const LlamaConfig& c = weights_.config;
  int n = 0;
  for (const Entry& e : entries) {
    if (e.tokens.empty()) return absl::InvalidArgumentError("a step entry has no tokens");
    for (int t : e.tokens) {
      if (t < 0 || t >= c.vocab_size) return absl::InvalidArgumentError(absl::StrCat("token id ", t, " is outside the vocabulary"));
    }
    n += static_cast<int>(e.tokens.size());
  }
  if (n > options_.max_step_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(n, " tokens exceed the step limit of ", options_.max_step_tokens));
  }
  const std::size_t logit_rows = every_token ? static_cast<std::size_t>(n) : entries.size();
  if (logits.size() < logit_rows * static_cast<std::size_t>(c.vocab_size)) {
    return absl::InvalidArgumentError("the logits buffer is too small");
  }
  for (const Entry& e : entries) RETURN_IF_ERROR(e.seq->Reserve(static_cast<int>(e.tokens.size())));

  stage_clock_ = StageClock(profile_);
  // Each token's sequence and position, and the page runs its queries read.
  int i = 0;
  for (const Entry& e : entries) {
    for (std::size_t j = 0; j < e.tokens.size(); ++j, ++i) {
      token_seq_[i] = e.seq;
      positions_[i] = e.seq->length() + static_cast<int64_t>(j);
    }
  }
  PlanPageRuns(n);
  bool one_token_per_sequence = static_cast<int>(entries.size()) == n;
  for (std::size_t e = 0; one_token_per_sequence && e < entries.size(); ++e) {
    for (std::size_t f = 0; f < e; ++f) one_token_per_sequence &= entries[f].seq != entries[e].seq;
  }
  written_pages_.clear();
  for (int t = 0; t < n; ++t) {
    const int page = token_seq_[t]->PageOf(positions_[t]);
    if (std::find(written_pages_.begin(), written_pages_.end(), page) == written_pages_.end()) written_pages_.push_back(page);
  }
  if (options_.step_offload) return OffloadStep(entries, n, logits, every_token);

  // Token embeddings.
  i = 0;
  for (const Entry& e : entries) {
    for (std::size_t j = 0; j < e.tokens.size(); ++j, ++i) {
      float* x = x_.data() + int64_t{i} * c.dim;
      const int64_t row = int64_t{e.tokens[j]} * c.dim;
      if (weights_.embedding_f32 != nullptr) {
        std::memcpy(x, weights_.embedding_f32 + row, c.dim * sizeof(float));
      } else {
        for (int d = 0; d < c.dim; ++d) x[d] = Fp16ToFloat(weights_.embedding_f16[row + d]);
      }
    }
  }
  PerToken(n, [&](int t) { rope_[t].Compute(c.head_size(), static_cast<int>(positions_[t]), c.rope_theta); });
  stage_clock_.Mark(StepStage::kEmbedding);

  const int kv_dim = c.kv_dim();
  const bool fake_a8 = options_.fake_quantize_activations;
  const auto maybe_fake_a8 = [&](float* x, int cols) {
    if (!fake_a8) return;
    for (int t = 0; t < n; ++t) FakeQuantizeA8(x + int64_t{t} * cols, cols);
  };
  const auto observe = [&](int layer, ForwardObserver::Input input, const float* x, int cols) {
    if (options_.observe_linear_input) options_.observe_linear_input(layer, input, x, n, cols);
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const EngineLayer& w = weights_.layers[l];

    // attention: (the previous layer's FFN residual), rmsnorm, q/k/v, RoPE, cache write, Λ
    // attention, output projection
    LinearInput attn_in{xb_.data(), n, c.dim, kAttentionInput};
    ResidualThenNorm(n, /*add_residual=*/l > 0, w.rms_att, QuantizeWhereMade(w.wq, attn_in));
    maybe_fake_a8(xb_.data(), c.dim);
    observe(l, ForwardObserver::Input::kAttention, xb_.data(), c.dim);
    stage_clock_.Mark(StepStage::kNorms);
    const LinearOutput qkv[] = {{&w.wq, q_.data(), c.dim}, {&w.wk, k_.data(), kv_dim}, {&w.wv, v_.data(), kv_dim}};
    Linears(qkv, attn_in);
    // Per (token, KV head): its query heads through RoPE into the attention batch with their page
    // runs, and its key through RoPE, then into the cache; then attention. When each sequence has
    // one token in the step, a token's attention reads no key another token writes, so the two run
    // in one loop.
    PrepareAttention(l, n);
    LinearInput wo_in{att_.data(), n, c.dim, kAttentionOutput};
    // (The KIVI simulation changes the cache after attention, not its output.)
    A8Batch* wo_a8 = QuantizeWhereMade(w.wo, wo_in);
    if (one_token_per_sequence) {
      RopeWriteAndAttend(n, wo_a8);
    } else {
      pool_threads_.ParallelFor(int64_t{n} * c.n_kv_heads, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          RopeAndWriteKv(static_cast<int>(item / c.n_kv_heads), static_cast<int>(item % c.n_kv_heads));
        }
      });
      stage_clock_.Mark(StepStage::kRopeKvWrite);
      Attention(n, wo_a8);
    }
    if (options_.kivi_group > 0) RoundTripCompletedKiviGroups(l, n);
    maybe_fake_a8(att_.data(), c.dim);
    observe(l, ForwardObserver::Input::kAttentionOutput, att_.data(), c.dim);
    Linear(w.wo, wo_in, xb_.data(), c.dim);

    // feed-forward: the attention residual, rmsnorm, SwiGLU
    LinearInput ffn_in{xb_.data(), n, c.dim, kFfnInput};
    ResidualThenNorm(n, /*add_residual=*/true, w.rms_ffn, QuantizeWhereMade(w.w1, ffn_in));
    maybe_fake_a8(xb_.data(), c.dim);
    observe(l, ForwardObserver::Input::kFfn, xb_.data(), c.dim);
    stage_clock_.Mark(StepStage::kNorms);
    const LinearOutput gate_up[] = {{&w.w1, hb_.data(), c.hidden_dim}, {&w.w3, hb2_.data(), c.hidden_dim}};
    Linears(gate_up, ffn_in);
    // In segments of each token's hidden vector (whole Hadamard blocks). With fewer tokens than
    // threads, a segment is a loop item, so that a single token's SwiGLU is spread over the
    // threads too; otherwise a token is, and it is quantized for the down projection right there.
    const int segment = c.ffn_hadamard_block > 0 ? c.ffn_hadamard_block : 512;
    const int segments = (c.hidden_dim + segment - 1) / segment;
    const auto swiglu_segment = [&](int64_t t, int s) {
      const int64_t first = int64_t{s} * segment;
      const int size = static_cast<int>(std::min<int64_t>(segment, c.hidden_dim - first));
      float* h = &hb_[t * c.hidden_dim + first];
      kernels_->swiglu(h, &hb2_[t * c.hidden_dim + first], size);
      if (c.ffn_hadamard_block > 0) kernels_->hadamard(h, size);
    };
    LinearInput down_in{hb_.data(), n, c.hidden_dim, kFfnDownInput};
    if (A8Batch* a8 = n >= threads() ? QuantizeWhereMade(w.w2, down_in) : nullptr) {
      PerToken(n, [&](int t) {
        for (int s = 0; s < segments; ++s) swiglu_segment(t, s);
        a8->Quantize(t, {&hb_[int64_t{t} * c.hidden_dim], static_cast<std::size_t>(c.hidden_dim)},
                     kernels_->a8_quantize);
      });
    } else {
      pool_threads_.ParallelFor(int64_t{n} * segments, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) swiglu_segment(item / segments, static_cast<int>(item % segments));
      });
    }
    maybe_fake_a8(hb_.data(), c.hidden_dim);
    observe(l, ForwardObserver::Input::kFfnDown, hb_.data(), c.hidden_dim);
    stage_clock_.Mark(StepStage::kElementwise);
    Linear(w.w2, down_in, xb_.data(), c.dim);  // its residual is added by the next norm
  }

  // The last layer's FFN residual and the final norm; logits for every token, or for the last token
  // of each entry (its row moved up to the entry's index: never past a row still to be read).
  ResidualThenNorm(n, /*add_residual=*/true, weights_.rms_final);
  if (!every_token) {
    i = 0;
    for (std::size_t e = 0; e < entries.size(); ++e) {
      i += static_cast<int>(entries[e].tokens.size());
      if (static_cast<int>(e) != i - 1) std::memcpy(&xb_[e * c.dim], &xb_[int64_t{i - 1} * c.dim], c.dim * sizeof(float));
    }
  }
  stage_clock_.Mark(StepStage::kNorms);
  LinearInput head_in{xb_.data(), static_cast<int>(logit_rows), c.dim, kClassifierInput};
  Linear(weights_.classifier, head_in, logits.data(), c.vocab_size);
  EndStep(entries);
  return absl::OkStatus();
}

void CpuEngine::EndStep(std::span<const Entry> entries) {
  if (profile_ != nullptr) ++profile_->steps;
  for (const Entry& e : entries) {
    e.seq->Advance(static_cast<int>(e.tokens.size()));
    e.seq->Evict(e.seq->length());
  }
}

absl::Status CpuEngine::OffloadStep(std::span<const Entry> entries, int n, std::span<float> logits, bool every_token) {
  const LlamaConfig& c = weights_.config;
  std::vector<int> tokens;
  tokens.reserve(n);
  for (const Entry& e : entries) tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
  std::vector<int32_t> positions(n), kv_vectors(n), sink_positions(n), logit_tokens;
  for (int t = 0; t < n; ++t) {
    positions[t] = static_cast<int32_t>(positions_[t]);
    const int page = token_seq_[t]->PageOf(positions_[t]);
    kv_vectors[t] = static_cast<int32_t>(kv_.VectorIndex(0, page, 0, static_cast<int>(positions_[t] % options_.page_tokens)));
    sink_positions[t] =
        token_sink_runs_[t] > 0 ? static_cast<int32_t>(options_.lambda.SinkQueryPosition(positions_[t])) : -1;
  }
  if (every_token) {
    for (int t = 0; t < n; ++t) logit_tokens.push_back(t);
  } else {
    int last = -1;
    for (const Entry& e : entries) logit_tokens.push_back(last += static_cast<int>(e.tokens.size()));
  }
  PrepareAttention(0, n);
  PerToken(n, [&](int t) {
    for (int h = 0; h < c.n_kv_heads; ++h) FillAttentionRuns(t, h);
  });
  StepPlan plan;
  plan.weights = &weights_;
  plan.rotate_kv = rotate_kv_;
  plan.tokens = tokens;
  plan.positions = positions;
  plan.kv_vectors = kv_vectors;
  plan.sink_positions = sink_positions;
  plan.attention = &attention_;
  plan.layer_vectors = kv_.VectorIndex(1, 0, 0, 0);
  plan.logit_tokens = logit_tokens;
  RETURN_IF_ERROR(options_.step_offload(plan, logits.first(logit_tokens.size() * static_cast<std::size_t>(c.vocab_size))));
  EndStep(entries);
  return absl::OkStatus();
}

}  // namespace accllm
