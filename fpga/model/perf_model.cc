#include "fpga/model/perf_model.h"

#include <algorithm>
#include <cmath>

#include "fpga/device_limits.h"
#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/model/step_shapes.h"
#include "fpga/model/unit_cycles.h"
#include "runtime/kv/sequence_kv.h"

namespace accllm::fpga {
namespace {

constexpr double kWeightsPerBeat = 256;  // 16 x 16 two-bit codes
constexpr double kUramBytes = 288.0 * 1024 / 8;

int64_t Pad(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

struct LinearShape {
  int64_t rows, cols;
};

std::vector<LinearShape> Linears(const LlamaConfig& c) {
  return {{c.dim, c.dim}, {c.kv_dim(), c.dim}, {c.kv_dim(), c.dim}, {c.dim, c.dim},
          {c.hidden_dim, c.dim}, {c.hidden_dim, c.dim}, {c.dim, c.hidden_dim}};
}

struct SequencedStepCycles {
  int64_t elementwise = 0, classifier = 0, sequencer = 0, descriptors = 0;
  std::vector<Estimate::OpCycles> by_op;
};

// A step of `tokens` tokens through the sequencer, `sink_tokens` of them with sink queries.
SequencedStepCycles SequencedCycles(const AcceleratorDesign& d, const Workload& w, int tokens, int logit_rows,
                                    int sink_tokens) {
  StepShape shape;
  shape.config = w.config;
  shape.group_size = w.group_size;
  shape.w8_classifier = w.w8_classifier;
  shape.tokens = tokens;
  shape.logit_rows = logit_rows;
  shape.w2a8_units = d.w2a8_units;
  shape.attention_units = d.attention_units;
  SequencedStepCycles cycles;
  absl::StatusOr<std::vector<hls::StepDescriptor>> program = ShapeOnlyProgram(shape);
  if (!program.ok()) return cycles;  // a shape the sequencer refuses: counted as nothing
  for (const hls::StepDescriptor& op_descriptor : *program) {
    const DescriptorCycles c = CyclesOf(op_descriptor, sink_tokens);
    cycles.elementwise += c.elementwise;
    const auto op = static_cast<std::size_t>(op_descriptor.op);
    if (cycles.by_op.size() <= op) cycles.by_op.resize(op + 1);
    ++cycles.by_op[op].descriptors;
    cycles.by_op[op].cycles += c.elementwise;
    cycles.classifier += c.classifier;
    cycles.sequencer += c.sequencer;
  }
  cycles.descriptors = static_cast<int64_t>(program->size());
  return cycles;
}

}  // namespace

Estimate EstimateAccelerator(const U280Platform& p, const AcceleratorDesign& d, const Workload& w) {
  const LlamaConfig& c = w.config;
  const double hz = d.clock_mhz * 1e6;
  const int batch = std::max(1, w.batch);
  const double channel_bytes_per_s = p.hbm_channel_gbps * 1e9 * p.hbm_efficiency;
  Estimate e;

  // Linear layers, from the W2A8 unit's loops (unit_cycles.h): each layer's row tiles striped over
  // the units, `tokens` in calls of token_lanes. A layer takes its slowest unit's cycles or that
  // unit's bytes at its channel's rate, whichever is longer; the layers run one after another.
  // 2:4 layers take as many cycles (half the sub-blocks, two beats each) and bytes.
  double linear_bytes = 0, macs = 0;
  int64_t widest_cols = 0;
  for (const LinearShape& l : Linears(c)) {
    const double rows = static_cast<double>(Pad(l.rows, 16)), cols = static_cast<double>(Pad(l.cols, w.group_size));
    linear_bytes += rows * cols / 4 + rows * (cols / w.group_size) * 3;  // codes + fp16 scale and u8 zero per group
    macs += rows * cols * (1.0 - 0.5 * w.sparse_fraction);
    widest_cols = std::max<int64_t>(widest_cols, Pad(l.cols, w.group_size));
  }
  linear_bytes *= c.n_layers;
  macs *= c.n_layers;
  struct LinearTime {
    double seconds = 0, compute_s = 0, read_s = 0;
    int64_t all_unit_cycles = 0;  // every unit's calls together
  };
  const auto linear_time = [&](int tokens) {
    LinearTime t;
    for (const LinearShape& l : Linears(c)) {
      const int64_t tiles = Pad(l.rows, 16) / 16, cols = Pad(l.cols, w.group_size);
      const int64_t units = std::min<int64_t>(d.w2a8_units, tiles);
      const int64_t slowest = (tiles + units - 1) / units;
      const double tile_bytes = static_cast<double>(cols) * 16 / 4 + 16.0 * (cols / w.group_size) * 3;
      int64_t cycles = 0;
      int calls = 0;
      for (int t0 = 0; t0 < tokens; t0 += d.token_lanes, ++calls) {
        const int n = std::min(d.token_lanes, tokens - t0);
        const W2A8Call call{static_cast<int>(cols), w.group_size, false, n, slowest};
        cycles += W2A8CallCycles(call);
        // Σ over units: every unit stages the call's activations; the tiles add up to the layer's.
        t.all_unit_cycles += units * W2A8StagingCycles(call) + tiles * W2A8TileCycles(call);
      }
      const double compute_s = cycles / hz, read_s = calls * slowest * tile_bytes / channel_bytes_per_s;
      t.compute_s += compute_s * c.n_layers;
      t.read_s += read_s * c.n_layers;
      t.seconds += std::max(compute_s, read_s) * c.n_layers;
    }
    t.all_unit_cycles *= c.n_layers;
    return t;
  };
  const LinearTime linear = linear_time(batch);
  e.linear_ms = 1e3 * linear.seconds;
  e.w2a8_cycles = linear.all_unit_cycles;
  // fp16 rows, or 8-bit codes with a float scale per 128 columns.
  const double classifier_bytes = w.w8_classifier ? c.vocab_size * (c.dim + 4.0 * c.dim / 128) : 2.0 * c.vocab_size * c.dim;
  e.weight_bytes = linear_bytes + classifier_bytes;

  // Attention, from the attention unit's loops: each (sequence, head) query of the new token (at
  // position context - 1) over its Λ page runs; a layer's queries split between the units.
  const LambdaConfig lambda = w.window > 0 ? LambdaConfig{w.sinks, w.window} : LambdaConfig{};
  const QuerySpan span = QuerySpanAt(std::max(0, w.context - 1), lambda, w.page_tokens);
  const int64_t queries = int64_t{batch} * c.n_heads;
  const int64_t lanes = hls::kAttentionQueryLanes, groups = (queries + lanes - 1) / lanes;
  const auto group_cycles = [&](int64_t n, const QuerySpan& s) {
    const std::vector<QuerySpan> spans(static_cast<std::size_t>(n), s);
    return AttentionGroupCycles(c.head_size(), spans);
  };
  // Whole groups and a last, partial one.
  const int64_t full_groups = queries / lanes, tail = queries % lanes;
  e.attention_cycles = (full_groups * group_cycles(lanes, span) + (tail > 0 ? group_cycles(tail, span) : 0)) * c.n_layers;
  const int64_t query_cycles = group_cycles(lanes, span);  // per group, the slowest unit's share below
  const double kv_token_bytes = 2.0 * c.n_layers * (c.kv_dim() / 2.0 + 4.0 * c.n_kv_heads);
  e.kv_bytes = kv_token_bytes * static_cast<double>(span.visible) * batch;
  const double kv_read_s = e.kv_bytes / (d.kv_channels * channel_bytes_per_s);
  const double attention_compute_s =
      static_cast<double>((groups + d.attention_units - 1) / d.attention_units * query_cycles * c.n_layers) / hz;
  e.attention_ms = 1e3 * std::max(kv_read_s, attention_compute_s);
  const double attention_macs = 2.0 * c.n_layers * c.dim * static_cast<double>(span.visible) * batch;

  // The element-wise units and the sequencer, from the step's descriptor list (one decode token
  // per sequence, each with sink queries once its window has moved past the sinks).
  const bool sinks = lambda.SinkEnd(std::max(0, w.context - 1)) > 0;
  const SequencedStepCycles decode = SequencedCycles(d, w, batch, batch, sinks ? batch : 0);
  e.elementwise_cycles = decode.elementwise + decode.sequencer;
  e.elementwise_by_op = decode.by_op;
  e.sequencer_cycles = decode.sequencer;
  e.classifier_unit_cycles = decode.classifier;
  e.descriptors = decode.descriptors;
  e.elementwise_ms = 1e3 * static_cast<double>(e.elementwise_cycles) / hz;
  e.overhead_ms = 1e-3 * d.step_overhead_us;
  // The classifier: in 8 bits on the units' 8-bit mode, striped like a linear layer (its slowest
  // unit's cycles or bytes); in fp16 on the sequencer's functional unit, as written.
  const auto classifier_seconds = [&](int tokens, int64_t fp16_unit_cycles) {
    if (!w.w8_classifier) return static_cast<double>(fp16_unit_cycles) / hz;
    const int64_t tiles = Pad(c.vocab_size, 16) / 16, cols = Pad(c.dim, 128);
    const int64_t units = std::min<int64_t>(d.w2a8_units, tiles), slowest = (tiles + units - 1) / units;
    const double tile_bytes = 16.0 * cols + 16.0 * (cols / 128) * 4;
    int64_t cycles = 0, calls = 0;
    for (int t0 = 0; t0 < tokens; t0 += d.token_lanes, ++calls) {
      cycles += W8A8CallCycles({static_cast<int>(cols), 128, std::min(d.token_lanes, tokens - t0), slowest});
    }
    return std::max(cycles / hz, calls * slowest * tile_bytes / channel_bytes_per_s);
  };
  e.classifier_ms = 1e3 * classifier_seconds(batch, decode.classifier);
  // The W2A8 engine, attention and element-wise units of one layer work in sequence.
  e.step_ms = e.linear_ms + e.classifier_ms + e.attention_ms + e.elementwise_ms + e.overhead_ms;
  e.tokens_per_s = w.cards * batch / (e.step_ms * 1e-3);
  e.bound = e.attention_ms > e.linear_ms ? "attention" : linear.compute_s > linear.read_s ? "compute" : "HBM";

  const double hbm_bytes_per_s = p.hbm_channels * p.hbm_channel_gbps * 1e9;
  e.hbm_roofline_tokens_per_s = w.cards * batch * hbm_bytes_per_s / (e.weight_bytes + e.kv_bytes);

  // Prefill: the prompt's tokens through the W2A8 units in calls of token_lanes; attention over
  // the growing prefix, each query as its unit runs it.
  const int prompt = std::max(1, w.context);
  const LinearTime prefill_linear = linear_time(prompt);
  int64_t prefill_attention_cycles = 0;  // a token's heads are groups of lanes
  for (int pos = 0; pos < prompt; ++pos) {
    prefill_attention_cycles += group_cycles(lanes, QuerySpanAt(pos, lambda, w.page_tokens));
  }
  const double prefill_attention_s =
      static_cast<double>(prefill_attention_cycles) * (c.n_heads / static_cast<double>(lanes)) * c.n_layers /
      d.attention_units / hz;
  int sink_tokens = 0;
  for (int pos = 0; pos < prompt; ++pos) sink_tokens += lambda.SinkEnd(pos) > 0 ? 1 : 0;
  const SequencedStepCycles prefill = SequencedCycles(d, w, prompt, 1, sink_tokens);
  const double prefill_elementwise_s = static_cast<double>(prefill.elementwise + prefill.sequencer) / hz;
  e.prefill_tokens_per_s = prompt / (prefill_linear.seconds + prefill_attention_s + prefill_elementwise_s +
                                     classifier_seconds(1, prefill.classifier));

  // Power at this step's rates.
  const double step_s = e.step_ms * 1e-3;
  const double bits_per_s = 8.0 * (e.weight_bytes + e.kv_bytes) / step_s;
  const double macs_per_s = (macs * batch + attention_macs) / step_s;
  e.watts = p.static_watts + p.hbm_pj_per_bit * 1e-12 * bits_per_s + d.mac_pj * 1e-12 * macs_per_s + d.logic_watts;
  e.joules_per_token = e.watts * w.cards / e.tokens_per_s;

  // Resources: the MAC arrays in DSPs; in URAM, per W2A8 unit the call's activations (the unit
  // streams its tiles and keeps none), per attention unit its lanes' scores (kv4_attention.cc).
  // LUTs and BRAM are not estimated: that needs synthesis.
  e.dsp_used = d.w2a8_units * static_cast<int>(kWeightsPerBeat) * d.token_lanes / d.macs_per_dsp +
               (d.attention_units * d.attention_lanes + d.elementwise_units * hls::kElementLanes) * d.dsp_per_fp32_lane;
  const double activation_bytes = static_cast<double>(d.token_lanes) * static_cast<double>(widest_cols);
  const double score_bytes = 4.0 * hls::kAttentionQueryLanes * hls::kKv4MaxVisible;
  e.uram_used = d.w2a8_units * static_cast<int>(std::ceil(activation_bytes / kUramBytes)) +
                d.attention_units * static_cast<int>(std::ceil(score_bytes / kUramBytes));
  // The KV cache: the same check a card's device makes when it sizes its pool.
  e.kv_pages_per_stream = SequenceKv::MaxPages(lambda, w.page_tokens, std::min(w.prefill_chunk, w.context), w.context);
  e.kv_streams = KvPagesThatFit(c, w.page_tokens) / std::max(1, e.kv_pages_per_stream);
  e.fits = e.dsp_used <= p.dsp && e.uram_used <= p.uram && d.w2a8_units + d.kv_channels <= p.hbm_channels &&
           CheckKvPagesFit(c, w.page_tokens, int64_t{batch} * e.kv_pages_per_stream).ok();
  return e;
}

std::vector<PublishedFigure> PublishedLlama2_7bOnU280() {
  return {{"AccLLM (paper, W2A8KV4, 2:4, Λ)", 164, 33}, {"FlightLLM (as reported by AccLLM)", 55, 0}};
}

}  // namespace accllm::fpga
