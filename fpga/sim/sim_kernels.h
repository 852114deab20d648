// The accelerator's kernels in C simulation, as a CPU kernel table: the CPU engine's forward pass
// then runs its W2A8 linear layers on the W2A8 engine (fpga/kernels/w2a8_engine) and its KV4
// attention on the score and accumulate units (fpga/kernels/kv4_attention), exactly as compiled
// for the card. The fp16 classifier stays on the host's best kernels.
#pragma once

#include "runtime/cpu/kernels.h"

namespace accllm::fpga {

const CpuKernels& FpgaSimKernels();

}  // namespace accllm::fpga
