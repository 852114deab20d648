// Cycle accounting in C simulation. Each unit keeps a tally as its loops run: every pipelined loop
// adds its initiation interval per iteration and its depth per entry, so a C-simulated call
// reports the cycles the scheduled design would spend; the performance model
// (fpga/model/unit_cycles.h) derives the same figures from the call shapes and is tested against
// these counts. A Vitis build compiles the tally out.
#pragma once

#include <cstdint>

namespace accllm::hls {

// kElementwise: norms, A8, RoPE, the KV4 write, SwiGLU, Hadamard rotations, embedding and row
// gathers (elementwise.cc and the sequencer's own loops); kClassifier: the W8 and fp16
// classifier units; kSequencer: reading and dispatching descriptors.
enum class CycleUnit { kW2A8, kAttention, kElementwise, kClassifier, kSequencer, kCount };

// Latencies the schedules depend on (Vitis HLS at 225 MHz on UltraScale+; assumed, not synthesized
// here): a sum carried from one iteration to the next sets the interval of the loop that carries it.
inline constexpr int kFaddLatency = 4;
inline constexpr int kFmaLatency = 5;
inline constexpr int kLoopDepth = 12;  // pipeline depth of a loop that reads HBM (AXI latency and datapath)
inline constexpr int kDivideLatency = 16;  // fp32 divide or square root, one after another in a scalar chain
// Element-wise units take one 512-bit beat of floats per cycle.
inline constexpr int kElementLanes = 16;

// Cycles counted in C simulation since the last reset, all threads together.
int64_t SimulatedCycles(CycleUnit unit);
void ResetSimulatedCycles();

#ifdef ACCLLM_VITIS_HLS
struct CycleTally {
  void Add(int64_t) {}
  void Commit(CycleUnit) {}
};
#else
struct CycleTally {
  int64_t cycles = 0;
  void Add(int64_t n) { cycles += n; }
  void Commit(CycleUnit unit);  // adds the tally to the unit's count
};
#endif

}  // namespace accllm::hls
