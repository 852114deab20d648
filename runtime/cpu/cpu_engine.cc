#include "runtime/cpu/cpu_engine.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
#include "runtime/common/hadamard.h"
#include "runtime/common/nn_ops.h"
#include "runtime/common/round.h"
#include "runtime/common/status_macros.h"

namespace accllm {
namespace {

float Dot(const float* a, const float* b, int n) {
  float acc = 0.0f;
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

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
  const CpuKernels* kernels = options.kernels;
  if (kernels == nullptr) {
    ASSIGN_OR_RETURN(kernels, SelectedKernels());
  }
  auto engine = std::unique_ptr<CpuEngine>(new CpuEngine(std::move(weights), options, *kernels));
  if (!engine->kv_.ok()) return absl::ResourceExhaustedError("cannot allocate the KV cache");
  return engine;
}

CpuEngine::CpuEngine(EngineWeights weights, const CpuEngineOptions& options, const CpuKernels& kernels)
    : weights_(std::move(weights)),
      options_(options),
      kernels_(&kernels),
      pool_threads_(options.threads),
      pool_(options.kv_pages > 0 ? options.kv_pages
                                 : SequenceKv::MaxPages(options.lambda, options.page_tokens, options.max_step_tokens,
                                                        weights_.config.max_seq_len)),
      kv_(weights_.config, pool_.total(), options.page_tokens, options.kv_precision) {
  rotate_kv_ = options.kv_precision == KvPrecision::kKv4 && options.kv4_rotation &&
               IsPowerOfTwo(weights_.config.head_size());
  const LlamaConfig& c = weights_.config;
  const std::size_t n = static_cast<std::size_t>(options.max_step_tokens);
  x_.resize(n * c.dim);
  xb_.resize(n * c.dim);
  q_.resize(n * c.dim);
  q_raw_.resize(n * c.dim);
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  att_.resize(n * c.dim);
  hb_.resize(n * c.hidden_dim);
  hb2_.resize(n * c.hidden_dim);
  positions_.resize(n);
  rope_.resize(n);
  token_seq_.resize(n);
}

std::string CpuEngine::name() const {
  return absl::StrCat(options_.label, "(", kernels_->name, ", ", pool_threads_.threads(), " threads, ",
                      KvPrecisionName(options_.kv_precision), ")");
}

void CpuEngine::Linear(const LinearWeights& w, LinearInput& in, float* y, int64_t ldy) {
  if (w.w2) {
    const W2Shape& s = w.w2->shape;
    auto& batch = a8_[{in.slot, s.cols_padded(), s.group_size}];
    if (!batch || batch->capacity() < options_.max_step_tokens) {
      batch = std::make_unique<A8Batch>(s.cols_padded(), s.group_size, options_.max_step_tokens);
    }
    if (!in.quantized || batch->tokens() != in.n) {
      // Sized first: the threads then write only their own tokens (not the count).
      batch->Resize(in.n);
      PerToken(in.n, [&](int t) { batch->Quantize(t, {in.x + t * in.ld, static_cast<std::size_t>(w.in)}); });
    }
    in.quantized = true;
    const W2View view = *w.w2;
    if (options_.w2a8_offload) {
      if (offload_status_.ok()) offload_status_ = options_.w2a8_offload(view, *batch, y, ldy);
      return;
    }
    pool_threads_.ParallelFor(s.row_tiles(), [&](int64_t begin, int64_t end) {
      kernels_->matmul_w2a8(view, *batch, static_cast<int>(begin), static_cast<int>(end), y, ldy);
    });
    return;
  }
  if (w.f16 != nullptr) {
    pool_threads_.ParallelFor(w.out, [&](int64_t begin, int64_t end) {
      kernels_->matmul_f16(w.f16, w.in, in.x, in.n, in.ld, static_cast<int>(begin), static_cast<int>(end), y, ldy);
    });
    return;
  }
  pool_threads_.ParallelFor(w.out, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = w.f32 + r * w.in;
      for (int t = 0; t < in.n; ++t) y[t * ldy + r] = Dot(row, in.x + t * in.ld, w.in);
    }
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

void CpuEngine::Attention(int layer, int n) {
  const LlamaConfig& c = weights_.config;
  const int hs = c.head_size();
  const LambdaConfig& lambda = options_.lambda;
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hs));
  pool_threads_.ParallelFor(int64_t{n} * c.n_heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> q_sink(hs), q_rotated(hs);
    for (int64_t item = begin; item < end; ++item) {
      const int i = static_cast<int>(item / c.n_heads), h = static_cast<int>(item % c.n_heads);
      const int kv_head = h / c.kv_mul();
      const int64_t m = positions_[i];
      const SequenceKv& seq = *token_seq_[i];
      const float* q = q_.data() + int64_t{i} * c.dim + h * hs;
      if (rotate_kv_) {  // into the cache's rotated basis
        std::memcpy(q_rotated.data(), q, hs * sizeof(float));
        Hadamard(q_rotated.data(), hs);
        q = q_rotated.data();
      }
      const int64_t window_start = std::max<int64_t>(0, lambda.WindowStart(m));
      const int64_t sink_end = std::min<int64_t>(lambda.full() ? 0 : lambda.sinks, window_start);
      // Sinks outside the window see the query at a capped position (see lambda_attention.h).
      if (sink_end > 0) {
        std::memcpy(q_sink.data(), q_raw_.data() + int64_t{i} * c.dim + h * hs, hs * sizeof(float));
        Rope(q_sink.data(), hs, hs, static_cast<int>(lambda.SinkQueryPosition(m)), c.rope_theta);
        if (rotate_kv_) Hadamard(q_sink.data(), hs);
      }
      const int64_t count = sink_end + (m - window_start + 1);
      if (static_cast<int64_t>(scores.size()) < count) scores.resize(count);
      float q_sum = 0.0f, q_sink_sum = 0.0f;
      for (int d = 0; d < hs; ++d) {
        q_sum += q[d];
        q_sink_sum += q_sink[d];
      }
      // Visits positions [begin, end) page by page: fn(view of the page, first slot, slots, index of the first).
      const int page_tokens = options_.page_tokens;
      const auto for_pages = [&](int64_t begin, int64_t end, bool values, int64_t first_index, const auto& fn) {
        for (int64_t p = begin; p < end;) {
          const int slot = static_cast<int>(p % page_tokens);
          const int n = static_cast<int>(std::min<int64_t>(page_tokens - slot, end - p));
          const int page = seq.PageOf(p);
          fn(values ? kv_.Values(layer, page, kv_head) : kv_.Keys(layer, page, kv_head), slot, n, first_index + (p - begin));
          p += n;
        }
      };
      const auto score_keys = [&](const float* query, float query_sum) {
        return [&, query, query_sum](const KvHeadView& keys, int slot, int n, int64_t index) {
          if (keys.precision == KvPrecision::kKv4) {
            kernels_->kv4_score(query, query_sum, keys.codes + slot * (hs / 2), keys.params + slot, n, hs, inv_sqrt,
                                &scores[index]);
            return;
          }
          for (int s = slot; s < slot + n; ++s, ++index) scores[index] = Dot(query, keys.f32 + s * hs, hs) * inv_sqrt;
        };
      };
      for_pages(0, sink_end, false, 0, score_keys(q_sink.data(), q_sink_sum));
      for_pages(window_start, m + 1, false, sink_end, score_keys(q, q_sum));
      Softmax(scores.data(), static_cast<int>(count));

      float* out = att_.data() + int64_t{i} * c.dim + h * hs;
      std::memset(out, 0, hs * sizeof(float));
      float min_sum = 0.0f;  // KV4: sum of p * min, added to every element at the end
      const auto add_values = [&](const KvHeadView& values, int slot, int n, int64_t index) {
        if (values.precision == KvPrecision::kKv4) {
          min_sum += kernels_->kv4_accumulate(out, &scores[index], values.codes + slot * (hs / 2), values.params + slot, n, hs);
          return;
        }
        for (int s = slot; s < slot + n; ++s, ++index) {
          const float* v = values.f32 + s * hs;
          for (int d = 0; d < hs; ++d) out[d] += scores[index] * v[d];
        }
      };
      for_pages(0, sink_end, true, 0, add_values);
      for_pages(window_start, m + 1, true, sink_end, add_values);
      if (min_sum != 0.0f) {
        for (int d = 0; d < hs; ++d) out[d] += min_sum;
      }
      if (rotate_kv_) Hadamard(out, hs);  // back from the cache's basis
    }
  });
}

absl::Status CpuEngine::Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) {
  const Entry entry{&seq, tokens};
  return Step({&entry, 1}, logits);
}

absl::Status CpuEngine::Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens, std::span<float> logits) {
  if (seqs.size() != tokens.size()) return absl::InvalidArgumentError("one token per sequence");
  std::vector<Entry> entries;
  entries.reserve(seqs.size());
  for (std::size_t i = 0; i < seqs.size(); ++i) entries.push_back({seqs[i], tokens.subspan(i, 1)});
  return Step(entries, logits);
}

absl::Status CpuEngine::Step(std::span<const Entry> entries, std::span<float> logits) {
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
  offload_status_ = absl::OkStatus();
  if (logits.size() < entries.size() * static_cast<std::size_t>(c.vocab_size)) {
    return absl::InvalidArgumentError("the logits buffer is too small");
  }
  for (const Entry& e : entries) RETURN_IF_ERROR(e.seq->Reserve(static_cast<int>(e.tokens.size())));

  // Token embeddings, and each token's sequence and position.
  int i = 0;
  for (const Entry& e : entries) {
    for (std::size_t j = 0; j < e.tokens.size(); ++j, ++i) {
      token_seq_[i] = e.seq;
      positions_[i] = e.seq->length() + static_cast<int64_t>(j);
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

  const int kv_dim = c.kv_dim();
  const bool fake_a8 = options_.fake_quantize_activations;
  const auto maybe_fake_a8 = [&](float* x, int cols) {
    if (!fake_a8) return;
    for (int t = 0; t < n; ++t) FakeQuantizeA8(x + int64_t{t} * cols, cols);
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const EngineLayer& w = weights_.layers[l];

    // attention: rmsnorm, q/k/v, RoPE, cache write, Λ attention, output projection
    PerToken(n, [&](int t) { RmsNorm(&xb_[int64_t{t} * c.dim], &x_[int64_t{t} * c.dim], w.rms_att, c.dim, c.norm_eps); });
    maybe_fake_a8(xb_.data(), c.dim);
    LinearInput attn_in{xb_.data(), n, c.dim, 0};
    Linear(w.wq, attn_in, q_.data(), c.dim);
    Linear(w.wk, attn_in, k_.data(), kv_dim);
    Linear(w.wv, attn_in, v_.data(), kv_dim);
    std::memcpy(q_raw_.data(), q_.data(), sizeof(float) * n * c.dim);
    PerToken(n, [&](int t) {
      rope_[t].Apply(&q_[int64_t{t} * c.dim], c.dim);
      rope_[t].Apply(&k_[int64_t{t} * kv_dim], kv_dim);
      if (rotate_kv_) {
        for (int h = 0; h < c.n_kv_heads; ++h) {
          Hadamard(&k_[int64_t{t} * kv_dim + h * c.head_size()], c.head_size());
          Hadamard(&v_[int64_t{t} * kv_dim + h * c.head_size()], c.head_size());
        }
      }
      kv_.Write(l, token_seq_[t]->PageOf(positions_[t]), static_cast<int>(positions_[t] % options_.page_tokens),
                &k_[int64_t{t} * kv_dim], &v_[int64_t{t} * kv_dim]);
    });
    Attention(l, n);
    maybe_fake_a8(att_.data(), c.dim);
    LinearInput wo_in{att_.data(), n, c.dim, 1};
    Linear(w.wo, wo_in, xb_.data(), c.dim);
    for (int64_t e = 0; e < int64_t{n} * c.dim; ++e) x_[e] += xb_[e];

    // feed-forward: rmsnorm, SwiGLU
    PerToken(n, [&](int t) { RmsNorm(&xb_[int64_t{t} * c.dim], &x_[int64_t{t} * c.dim], w.rms_ffn, c.dim, c.norm_eps); });
    maybe_fake_a8(xb_.data(), c.dim);
    LinearInput ffn_in{xb_.data(), n, c.dim, 2};
    Linear(w.w1, ffn_in, hb_.data(), c.hidden_dim);
    Linear(w.w3, ffn_in, hb2_.data(), c.hidden_dim);
    PerToken(n, [&](int t) { SwiGlu(&hb_[int64_t{t} * c.hidden_dim], &hb2_[int64_t{t} * c.hidden_dim], c.hidden_dim); });
    maybe_fake_a8(hb_.data(), c.hidden_dim);
    LinearInput down_in{hb_.data(), n, c.hidden_dim, 3};
    Linear(w.w2, down_in, xb_.data(), c.dim);
    if (!offload_status_.ok()) return offload_status_;
    for (int64_t e = 0; e < int64_t{n} * c.dim; ++e) x_[e] += xb_[e];
  }

  // Logits for the last token of each entry.
  i = 0;
  for (std::size_t e = 0; e < entries.size(); ++e) {
    i += static_cast<int>(entries[e].tokens.size());
    RmsNorm(&xb_[e * c.dim], &x_[int64_t{i - 1} * c.dim], weights_.rms_final, c.dim, c.norm_eps);
  }
  LinearInput head_in{xb_.data(), static_cast<int>(entries.size()), c.dim, 4};
  Linear(weights_.classifier, head_in, logits.data(), c.vocab_size);
  if (!offload_status_.ok()) return offload_status_;

  for (const Entry& e : entries) {
    e.seq->Advance(static_cast<int>(e.tokens.size()));
    e.seq->Evict(e.seq->length());
  }
  return absl::OkStatus();
}

}  // namespace accllm
