#include "fpga/kernels/cycle_count.h"

#include <atomic>

namespace accllm::hls {
namespace {

std::atomic<int64_t> counts[static_cast<int>(CycleUnit::kCount)];

}  // namespace

int64_t SimulatedCycles(CycleUnit unit) { return counts[static_cast<int>(unit)].load(); }

void ResetSimulatedCycles() {
  for (auto& c : counts) c.store(0);
}

#ifndef ACCLLM_VITIS_HLS
void CycleTally::Commit(CycleUnit unit) { counts[static_cast<int>(unit)].fetch_add(cycles); }
#endif

}  // namespace accllm::hls
