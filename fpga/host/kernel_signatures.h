// The argument lists of the accelerator's top functions (fpga/kernels), in order: what the host
// passes to xrt::run, what the xclbin's kernel metadata describes, and which AXI master bundle
// (and so which HBM bank, per fpga/build/u280.cfg) each buffer argument uses.
#pragma once

#include <string>
#include <vector>

namespace accllm::fpga {

// AXI4-Stream arguments connect compute units to each other at link time (stream_connect); the
// host sets none of them, and every kernel lists them last.
enum class StreamDirection { kNone, kIn, kOut };

struct KernelArg {
  const char* name;
  bool buffer;         // a pointer (AXI master) rather than a scalar (AXI-Lite) or a stream
  const char* bundle;  // AXI master bundle of a buffer ("gmem0", ...); "" otherwise
  int bytes;           // scalar size (buffers: 8, the device address; streams: an element's)
  StreamDirection stream = StreamDirection::kNone;

  bool is_stream() const { return stream != StreamDirection::kNone; }
};

struct KernelSignature {
  const char* name;
  std::vector<KernelArg> args;
};

const std::vector<KernelSignature>& AcceleratorKernels();
const KernelSignature* FindKernel(const std::string& name);
int ArgIndex(const KernelSignature& kernel, const std::string& arg);  // -1 if absent

// Argument indices, as the host sets them (the arguments before the streams).
// accllm_sequencer (fpga/kernels/sequencer.h): the step's descriptor list, the shared masters (all
// set to one buffer, whose address is kSequencerSharedBase), the KV channels' buffers.
enum SequencerArg {
  kSequencerProgram, kSequencerCount, kSequencerSharedFloats, kSequencerSharedInts, kSequencerSharedCodes,
  kSequencerSharedBytes, kSequencerSharedHalves, kSequencerSharedWords, kSequencerSharedBase, kSequencerKv0,
  kSequencerHostArgs = kSequencerKv0 + 4,
};
// accllm_w2a8 (fpga/kernels/w2a8_unit.h): the weight masters (one buffer in the unit's channel),
// the shared masters.
enum W2A8Arg {
  kW2A8Weights, kW2A8WeightHalves, kW2A8WeightBytes, kW2A8WeightFloats, kW2A8WeightBase, kW2A8SharedWords,
  kW2A8SharedCodes, kW2A8SharedInts, kW2A8SharedFloats, kW2A8SharedBase, kW2A8HostArgs,
};
// accllm_kv4_attention (fpga/kernels/kv4_attention.h; kAttnKv0 + c: KV channel c's buffer).
enum Kv4AttentionArg {
  kAttnSharedFloats, kAttnSharedInts, kAttnSharedWords, kAttnSharedBase, kAttnKv0, kAttnHostArgs = kAttnKv0 + 4,
};

}  // namespace accllm::fpga
