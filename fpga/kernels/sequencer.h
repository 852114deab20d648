// The layer sequencer: one kernel start runs a whole step. The host writes the step's descriptor
// list (step_descriptor.h; fpga/step_program.h builds it) and starts the sequencer once; the
// sequencer walks the list, runs the element-wise descriptors on its own units (norm+A8, A8,
// RoPE and the KV4 write, SwiGLU, Hadamard, embedding, row gathers, the fp16 classifier) and
// sends each linear and attention descriptor down the chain of units that runs it (unit_chain.h),
// waiting for its done token; so the logits are the only read-back. It reaches buffers through
// its masters on the shared channels and on the four KV channels (device_memory.h).
#pragma once

#include <cstdint>

#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/device_memory.h"
#include "fpga/kernels/step_descriptor.h"
#include "fpga/kernels/unit_chain.h"

namespace accllm::hls {

// Cycles the sequencer spends on a descriptor besides running it: reading its beats, and for one
// it sends down a chain, the chain's round trip (a kStop goes down both chains).
inline int64_t DescriptorReadCycles() { return (static_cast<int64_t>(sizeof(StepDescriptor)) + 63) / 64 + kLoopDepth; }
inline int64_t ChainCycles(const StepDescriptor& d) {
  switch (d.op) {
    case StepOp::kW2A8:
    case StepOp::kAttention: return ChainRoundTripCycles(d.n[5]);
    case StepOp::kW8A8: return ChainRoundTripCycles(d.n[4]);
    case StepOp::kStop: return ChainRoundTripCycles(d.n[0]) + ChainRoundTripCycles(d.n[1]);
    default: return 0;
  }
}

#ifndef ACCLLM_VITIS_HLS
// Sequencer starts in C simulation since the process began, all threads together.
int64_t SequencerStarts();

// A sequencer start in C simulation, the unit chains run in it: addresses are host addresses, or
// what a ScopedDeviceMemory maps them to.
void RunSequencerInCSim(const StepDescriptor* program, int count);
#endif

}  // namespace accllm::hls

// The sequencer's top function: runs `count` descriptors in order (or up to a kStop). The shared
// masters are all set to one buffer in the shared channels, whose device address is shared_base;
// kv0..kv3 to the KV channels' buffers (kv_channels.h). Streams last: the host sets none of them.
extern "C" void accllm_sequencer(const accllm::hls::StepDescriptor* program, int count, float* shared_floats,
                                 int32_t* shared_ints, int8_t* shared_codes, uint8_t* shared_bytes,
                                 uint16_t* shared_halves, uint64_t* shared_words, uint64_t shared_base,
                                 uint8_t* kv0, uint8_t* kv1, uint8_t* kv2, uint8_t* kv3,
                                 accllm::hls::CommandStream& w2a8_commands, accllm::hls::CommandStream& w2a8_returned,
                                 accllm::hls::TokenStream& w2a8_seed, accllm::hls::TokenStream& w2a8_done,
                                 accllm::hls::CommandStream& attention_commands,
                                 accllm::hls::CommandStream& attention_returned,
                                 accllm::hls::TokenStream& attention_seed, accllm::hls::TokenStream& attention_done);
