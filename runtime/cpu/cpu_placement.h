// Where a pool's threads run: the CPUs this process may use, one hardware thread of each physical
// core first (so N threads on an SMT machine take N cores, not N / 2 cores' two siblings), then
// the sibling threads; and pinning the calling thread to one of them.
#pragma once

#include <vector>

#include "absl/status/status.h"

namespace accllm {

// The allowed CPUs (sched_getaffinity), ordered: by sibling rank within the core, then package,
// then core (from /sys/devices/system/cpu/cpu*/topology; CPUs it cannot read come last, in order).
std::vector<int> PlacementOrder();

absl::Status PinCurrentThread(int cpu);

}  // namespace accllm
