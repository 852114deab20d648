// The argument lists of the accelerator's top functions (fpga/kernels), in order: what the host
// passes to xrt::run, what the xclbin's kernel metadata describes, and which AXI master bundle
// (and so which HBM bank, per fpga/build/u280.cfg) each buffer argument uses.
#pragma once

#include <string>
#include <vector>

namespace accllm::fpga {

struct KernelArg {
  const char* name;
  bool buffer;         // a pointer (AXI master) rather than a scalar (AXI-Lite)
  const char* bundle;  // AXI master bundle of a buffer ("gmem0", ...); "" for scalars
  int bytes;           // scalar size (buffers: 8, the device address)
};

struct KernelSignature {
  const char* name;
  std::vector<KernelArg> args;
};

const std::vector<KernelSignature>& AcceleratorKernels();
const KernelSignature* FindKernel(const std::string& name);
int ArgIndex(const KernelSignature& kernel, const std::string& arg);  // -1 if absent

// Argument indices of accllm_sequencer (fpga/kernels/sequencer.h): the step's descriptor list.
enum SequencerArg { kSequencerProgram, kSequencerCount };

// Argument indices of accllm_w2a8, as the host sets them.
enum W2A8Arg {
  kW2A8Codes, kW2A8SparseIndex, kW2A8Scales, kW2A8Zeros, kW2A8Activations, kW2A8GroupSums, kW2A8ActScales, kW2A8Out,
  kW2A8Rows, kW2A8ColsPadded, kW2A8GroupSize, kW2A8Sparse24, kW2A8Tokens, kW2A8Ldy, kW2A8TileBegin, kW2A8TileEnd,
};

// Argument indices of accllm_kv4_attention (kAttnKv0 + c: KV channel c's buffer).
enum Kv4AttentionArg {
  kAttnQ, kAttnQSink, kAttnItemRuns, kAttnItemSinkRuns, kAttnItems, kAttnKv0, kAttnKv1, kAttnKv2, kAttnKv3,
  kAttnKeyParamsOffset, kAttnValueCodesOffset, kAttnValueParamsOffset, kAttnPageTokens, kAttnFirstVector,
  kAttnRunStart, kAttnRunCount, kAttnHeadSize, kAttnOut,
};

}  // namespace accllm::fpga
