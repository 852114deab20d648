// The accelerator's W2A8 engine in C simulation, as a CPU kernel table: the CPU engine's forward
// pass then runs its W2A8 linear layers on the engine (fpga/kernels/w2a8_engine) exactly as
// compiled for the card. Attention goes to the simulated attention unit whole (see
// fpga_sim_backend.cc); the fp16 classifier stays on the host's best kernels.
#pragma once

#include "runtime/cpu/kernels.h"

namespace accllm::fpga {

const CpuKernels& FpgaSimKernels();

}  // namespace accllm::fpga
