#include "fpga/model/perf_model.h"

#include <algorithm>
#include <cmath>

#include "fpga/device_limits.h"
#include "runtime/kv/sequence_kv.h"

namespace accllm::fpga {
namespace {

constexpr double kBeatBytes = 64;
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

}  // namespace

Estimate EstimateAccelerator(const U280Platform& p, const AcceleratorDesign& d, const Workload& w) {
  const LlamaConfig& c = w.config;
  const double hz = d.clock_mhz * 1e6;
  const int batch = std::max(1, w.batch);
  Estimate e;

  // Linear layers: the packed format's bytes, beats, and MACs (2:4 layers store half the codes
  // plus as many index bits: the same bytes, half the MACs).
  double linear_bytes = 0, beats = 0, macs = 0;
  int64_t widest_tile_beats = 0;
  for (const LinearShape& l : Linears(c)) {
    const double rows = static_cast<double>(Pad(l.rows, 16)), cols = static_cast<double>(Pad(l.cols, w.group_size));
    const double code_bytes = rows * cols / 4;
    linear_bytes += code_bytes + rows * (cols / w.group_size) * 3;  // + fp16 scale and u8 zero per group
    beats += code_bytes / kBeatBytes;
    macs += rows * cols * (1.0 - 0.5 * w.sparse_fraction);
    widest_tile_beats = std::max<int64_t>(widest_tile_beats, Pad(l.cols, w.group_size) / 16);
  }
  linear_bytes *= c.n_layers;
  beats *= c.n_layers;
  macs *= c.n_layers;
  const double classifier_bytes = 2.0 * c.vocab_size * c.dim;
  e.weight_bytes = linear_bytes + classifier_bytes;

  const double channel_bytes_per_s = p.hbm_channel_gbps * 1e9 * p.hbm_efficiency;
  const double unit_bytes_per_s = std::min(channel_bytes_per_s, kBeatBytes * hz);
  const double weight_read_s = linear_bytes / (d.w2a8_units * unit_bytes_per_s);
  const double lane_groups = std::ceil(static_cast<double>(batch) / d.token_lanes);
  // Dense beats take one cycle per lane group; a 2:4 beat carries 256 kept weights of 512.
  const double compute_s = beats * lane_groups / (d.w2a8_units * hz);
  const double fill_s = c.n_layers * 7.0 * d.pipeline_fill_cycles / hz;
  e.linear_ms = 1e3 * (std::max(weight_read_s, compute_s) + fill_s);
  e.classifier_ms = 1e3 * classifier_bytes / (d.w2a8_units * unit_bytes_per_s);

  // Attention over the Λ window: KV4 codes plus fp16 scale and min per (token, head).
  const int64_t visible = w.window > 0 ? std::min<int64_t>(w.context, int64_t{w.sinks} + w.window) : w.context;
  const double kv_token_bytes = 2.0 * c.n_layers * (c.kv_dim() / 2.0 + 4.0 * c.n_kv_heads);
  e.kv_bytes = kv_token_bytes * static_cast<double>(visible) * batch;
  const double kv_read_s = e.kv_bytes / (d.kv_channels * channel_bytes_per_s);
  const double attention_macs = 2.0 * c.n_layers * c.dim * static_cast<double>(visible) * batch;
  const double attention_compute_s = attention_macs / (static_cast<double>(d.attention_units) * d.attention_lanes * hz);
  e.attention_ms = 1e3 * std::max(kv_read_s, attention_compute_s);

  const double elementwise = static_cast<double>(c.n_layers) * (6.0 * c.dim + 3.0 * c.hidden_dim) * batch;
  e.elementwise_ms = 1e3 * elementwise / (static_cast<double>(d.elementwise_lanes) * hz);
  e.overhead_ms = 1e-3 * d.step_overhead_us;
  // The W2A8 engine, attention and element-wise units of one layer work in sequence.
  e.step_ms = e.linear_ms + e.classifier_ms + e.attention_ms + e.elementwise_ms + e.overhead_ms;
  e.tokens_per_s = w.cards * batch / (e.step_ms * 1e-3);
  e.bound = e.attention_ms > e.linear_ms ? "attention" : compute_s > weight_read_s ? "compute" : "HBM";

  const double hbm_bytes_per_s = p.hbm_channels * p.hbm_channel_gbps * 1e9;
  e.hbm_roofline_tokens_per_s = w.cards * batch * hbm_bytes_per_s / (e.weight_bytes + e.kv_bytes);

  // Prefill: every prompt token through the MAC array, weights read once per row tile.
  const double prompt = std::max(1, w.context);
  const double prefill_compute_s = beats * std::ceil(prompt / d.token_lanes) / (d.w2a8_units * hz);
  const double prefill_attention_s =
      2.0 * c.n_layers * c.dim * prompt * static_cast<double>(std::min<int64_t>(visible, w.context)) / 2 /
      (static_cast<double>(d.attention_units) * d.attention_lanes * hz);
  e.prefill_tokens_per_s =
      prompt / (std::max(prefill_compute_s, weight_read_s) + prefill_attention_s + classifier_bytes / (d.w2a8_units * unit_bytes_per_s) +
                fill_s);

  // Power at this step's rates.
  const double step_s = e.step_ms * 1e-3;
  const double bits_per_s = 8.0 * (e.weight_bytes + e.kv_bytes) / step_s;
  const double macs_per_s = (macs * batch + attention_macs) / step_s;
  e.watts = p.static_watts + p.hbm_pj_per_bit * 1e-12 * bits_per_s + d.mac_pj * 1e-12 * macs_per_s + d.logic_watts;
  e.joules_per_token = e.watts * w.cards / e.tokens_per_s;

  // Resources: the MAC arrays in DSPs; per unit a double-buffered tile and its activations in URAM.
  e.dsp_used = d.w2a8_units * static_cast<int>(kWeightsPerBeat) * d.token_lanes / d.macs_per_dsp +
               (d.attention_units * d.attention_lanes + d.elementwise_lanes) * d.dsp_per_fp32_lane;
  const double tile_bytes = static_cast<double>(widest_tile_beats) * kBeatBytes;
  const double activation_bytes = static_cast<double>(d.token_lanes) * Pad(c.hidden_dim, w.group_size);
  e.uram_used = d.w2a8_units * static_cast<int>(2 * std::ceil(tile_bytes / kUramBytes) + std::ceil(activation_bytes / kUramBytes));
  // The KV cache: the same check a card's device makes when it sizes its pool.
  const LambdaConfig lambda = w.window > 0 ? LambdaConfig{w.sinks, w.window} : LambdaConfig{};
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
