// A performance and power estimate of the AccLLM accelerator on an Alveo U280, for a model shape,
// batch size and context length. The units' cycles come from the kernels' own loops
// (unit_cycles.h, held to the C simulation's counts by tests/fpga_host_test.cc); what the code
// does not decide is a stated parameter:
//
//   * W2A8 units: `w2a8_units` compute units, each holding a stripe of every linear layer's row
//     tiles in its HBM channel; a layer takes its slowest unit's call cycles or that unit's bytes
//     at the channel's sustained rate (`hbm_efficiency`, assumed), whichever is longer.
//   * attention: each query's cycles over its Λ page runs, a layer's queries split between the
//     `attention_units`, or the KV bytes at the KV channels' rate if longer.
//   * element-wise units (norm+A8, A8, RoPE and the KV4 write, the queries' preparation, SwiGLU,
//     Hadamard, embedding, gathers) and the sequencer's own reading of descriptors: the step's
//     descriptor list as BuildStepProgram makes it (step_shapes.h), each descriptor's cycles from
//     the loops that run it (unit_cycles.h CyclesOf), one after another.
//   * classifier: in 8 bits (the default), on every W2A8 unit's 8-bit mode over its stripe of the
//     classifier's rows, as a linear layer (W8A8CallCycles, or the stripe's bytes); in fp16, the
//     sequencer's functional unit as written (8 fma lanes per cycle: slow, for bit-exact tests).
//   * control: one sequencer start per step and the logits read back (`step_overhead_us`,
//     assumed), as the XRT driver and fpga-sim run it.
// Power = static + HBM energy per bit moved + MAC energy + clocked logic, all assumed constants
// (docs/FPGA.md).
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
  int attention_lanes = 128;   // fp32 multiply-adds unrolled per unit (DSP count): a head vector
  int elementwise_units = 4;   // norm+A8, RoPE, SwiGLU, Hadamard: 16 fp32 lanes each (DSP count)
  int dsp_per_fp32_lane = 5;   // fp32 multiply (3) + add (2)
  double step_overhead_us = 10;    // one sequencer start and the logits read back (assumed)
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
  bool w8_classifier = true;   // the classifier in 8 bits (the engine's default), else fp16
};

struct Estimate {
  double weight_bytes = 0;        // per step: W2 codes, scales, zeros, fp16 classifier
  double kv_bytes = 0;            // per step, all sequences
  double linear_ms = 0, classifier_ms = 0, attention_ms = 0, elementwise_ms = 0, overhead_ms = 0;
  int64_t w2a8_cycles = 0;        // every W2A8 unit's cycles in the step, added up (the C simulation's count)
  int64_t attention_cycles = 0;   // every attention query's cycles in the step, added up
  int64_t elementwise_cycles = 0; // the element-wise units' and the sequencer's, as the C simulation counts them
  int64_t classifier_unit_cycles = 0;  // the classifier's, all units together (the C simulation's count)
  int64_t descriptors = 0;        // in the step's descriptor list
  // `elementwise_cycles` by where they go: per descriptor op (indexed by hls::StepOp), and the
  // sequencer's own reading and dispatching of the descriptors.
  struct OpCycles {
    int64_t descriptors = 0, cycles = 0;
  };
  std::vector<OpCycles> elementwise_by_op;
  int64_t sequencer_cycles = 0;
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
