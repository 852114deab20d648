#include "fpga/model/step_shapes.h"

#include <numeric>

#include "fpga/step_program.h"

namespace accllm::fpga {

absl::StatusOr<std::vector<hls::StepDescriptor>> ShapeOnlyProgram(const StepShape& s) {
  const LlamaConfig& c = s.config;
  // BuildStepProgram asks weights for addresses only (answered 0 here), but refuses null
  // embeddings and classifiers: they point at this placeholder, never read.
  static const uint16_t kNoData[1] = {};
  EngineWeights weights;
  weights.config = c;
  weights.embedding_f16 = kNoData;
  const auto w2 = [&](int rows, int cols) {
    LinearWeights l;
    l.out = rows;
    l.in = cols;
    W2View view;
    view.shape = {rows, cols, s.group_size, false};
    l.w2 = view;
    return l;
  };
  for (int i = 0; i < c.n_layers; ++i) {
    EngineLayer layer{};
    layer.wq = w2(c.dim, c.dim);
    layer.wk = w2(c.kv_dim(), c.dim);
    layer.wv = w2(c.kv_dim(), c.dim);
    layer.wo = w2(c.dim, c.dim);
    layer.w1 = w2(c.hidden_dim, c.dim);
    layer.w3 = w2(c.hidden_dim, c.dim);
    layer.w2 = w2(c.dim, c.hidden_dim);
    weights.layers.push_back(layer);
  }
  weights.classifier.out = c.vocab_size;
  weights.classifier.in = c.dim;
  if (s.w8_classifier) {
    W8View view;
    view.shape = {c.vocab_size, c.dim, 128};
    weights.classifier.w8 = view;
  } else {
    weights.classifier.f16 = kNoData;
  }

  AttentionBatch runs;
  const std::vector<int> tokens(static_cast<std::size_t>(s.tokens), 0);
  const std::vector<int32_t> per_token(static_cast<std::size_t>(s.tokens), 0);
  std::vector<int32_t> logit_tokens(static_cast<std::size_t>(s.logit_rows));
  std::iota(logit_tokens.begin(), logit_tokens.end(), s.tokens - s.logit_rows);
  StepPlan plan;
  plan.weights = &weights;
  plan.rotate_kv = s.rotate_kv;
  plan.tokens = tokens;
  plan.positions = per_token;
  plan.kv_vectors = per_token;
  plan.sink_positions = per_token;
  plan.attention = &runs;
  plan.logit_tokens = logit_tokens;
  // Buffers at a placeholder address: the sequencer reads "no residual" and "norm to A8" from
  // zero addresses, so these must not be zero.
  StepBuffers buffers;
  for (uint64_t* b : {&buffers.x, &buffers.y, &buffers.q, &buffers.q_raw, &buffers.k, &buffers.v, &buffers.att,
                      &buffers.h, &buffers.h2, &buffers.queries, &buffers.sink_queries, &buffers.normalized,
                      &buffers.logits, &buffers.a8_codes, &buffers.a8_group_sums, &buffers.a8_scales, &buffers.tokens,
                      &buffers.positions, &buffers.kv_vectors, &buffers.sink_positions, &buffers.logit_rows,
                      &buffers.item_runs, &buffers.item_sink_runs, &buffers.run_start, &buffers.run_count}) {
    *b = 1;
  }
  return BuildStepProgram(plan, buffers,
                          {[](const void*) { return uint64_t{0}; }, [](const W2View&) { return uint64_t{0}; },
                           [](const W8View&) { return uint64_t{0}; }},
                          {s.w2a8_units, s.attention_units});
}

}  // namespace accllm::fpga
