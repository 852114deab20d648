// A cycle-level performance and power estimate of the AccLLM accelerator on an Alveo U280, for a
// model shape, batch size and context length, built from the same formats the kernels use:
//
//   * W2A8 engine: `w2a8_units` compute units, one per HBM pseudo-channel holding its stripe of
//     every linear layer's row tiles. Each unit takes one 512-bit beat (one 16x16 W2 sub-block)
//     per cycle and applies it to `token_lanes` tokens at once (256 MACs per lane per cycle,
//     packed `macs_per_dsp` to a DSP48E2). A step costs max(beats read at the channel's rate,
//     beats x ceil(batch / token_lanes) cycles) plus the pipeline fill of every layer.
//   * fp16 classifier: streamed over all weight channels at their bandwidth.
//   * KV4 attention: the visible (Λ) tokens' 4-bit K and V pages from `kv_channels` channels;
//     `attention_lanes` multiply-adds per cycle per unit.
//   * element-wise units (RMSNorm+A8, RoPE, SwiGLU, softmax): `elementwise_lanes` per cycle.
//   * one host command per step (XRT/ERT), `step_overhead_us`.
// Power = static + HBM energy per bit moved + MAC energy + clocked logic. Constants that come from
// data sheets or the literature rather than measurement are marked "assumed" in
// docs/FPGA.md; the model is held against the paper's measured figure there and in the tests.
#pragma once

#include <string>
#include <vector>

#include "runtime/model/llama_config.h"

namespace accllm::fpga {

struct U280Platform {
  int hbm_channels = 32;
  double hbm_channel_gbps = 14.375;  // GB/s per pseudo-channel (460 GB/s in all)
  double hbm_efficiency = 0.85;      // sustained fraction with long bursts (assumed)
  int dsp = 9024;
  int uram = 960;                    // 288 Kb each
  int bram36 = 2016;
  double static_watts = 19.0;        // board, HBM and fabric at idle (assumed)
  double hbm_pj_per_bit = 3.9;       // HBM2 access energy (assumed, literature)
};

struct AcceleratorDesign {
  double clock_mhz = 225;
  int w2a8_units = 24;
  int token_lanes = 4;
  int macs_per_dsp = 4;
  int kv_channels = 4;
  int attention_units = 2;
  int attention_lanes = 128;   // fp32 multiply-adds per cycle: one head vector (kv4_attention.cc)
  int elementwise_lanes = 64;
  int dsp_per_fp32_lane = 5;   // fp32 multiply (3) + add (2)
  int pipeline_fill_cycles = 200;  // per linear layer per step
  double step_overhead_us = 10;
  double mac_pj = 0.5;             // int2 x int8 MAC with its local data movement (assumed)
  double logic_watts = 3.0;        // clock tree and control at 225 MHz (assumed)
};

struct Workload {
  LlamaConfig config;
  int group_size = 128;
  double sparse_fraction = 0;  // share of linear weights in 2:4 layers (their MACs halve)
  int batch = 1;               // sequences decoded together per card
  int context = 1024;          // tokens in each sequence so far
  int sinks = 4;
  int window = 0;              // 0: full attention
  int cards = 1;               // data parallel: each card holds the whole model
  int page_tokens = 16;        // KV pages as the server sizes them
  int prefill_chunk = 64;
};

struct Estimate {
  double weight_bytes = 0;        // per step: W2 codes, scales, zeros, fp16 classifier
  double kv_bytes = 0;            // per step, all sequences
  double linear_ms = 0, classifier_ms = 0, attention_ms = 0, elementwise_ms = 0, overhead_ms = 0;
  double step_ms = 0;
  double tokens_per_s = 0;        // decode, all cards together
  double hbm_roofline_tokens_per_s = 0;  // weights + KV at the full 460 GB/s, per card x cards
  double prefill_tokens_per_s = 0;       // one card, a `context`-token prompt
  double watts = 0;               // per card
  double joules_per_token = 0;
  int dsp_used = 0, uram_used = 0;
  int kv_pages_per_stream = 0;    // worst case of one stream of `context` tokens (as admission reserves)
  int kv_streams = 0;             // such streams the KV banks hold (fpga/device_limits.h)
  bool fits = false;              // within the U280's DSP and URAM budgets, and `batch` streams in the KV banks
  std::string bound;              // what limits the step: "HBM", "compute", "attention"
};

Estimate EstimateAccelerator(const U280Platform& platform, const AcceleratorDesign& design, const Workload& work);

// Published decode figures for Llama-2-7B on one U280 (AccLLM, arXiv 2505.03745; FlightLLM).
struct PublishedFigure {
  const char* design;
  double tokens_per_s;
  double watts;  // 0: not reported
};
std::vector<PublishedFigure> PublishedLlama2_7bOnU280();

}  // namespace accllm::fpga
