// TEST ONLY. Makes XRT 2.13's noop shim compute: every buffer gets a shadow "device" copy (and a
// distinct device address), sync copies between host and shadow, and starting the layer sequencer
// runs its C simulation (the unit chains' work included) on the shadow copies, device addresses
// in its descriptors included; a start of a W2A8 or attention unit (once per card) is counted.
// A missing sync therefore shows up as stale data, as on a card. It rewrites entries of the noop device class's vtable (found by the shim's
// exported symbol names), which depends on XRT internals: never use this outside tests.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace accllm::testing {

// Installs the hook on device 0 (call once, after XCL_EMULATION_MODE=noop is set). `xclbin`
// names the compute units in the order XRT numbers them.
absl::Status InstallNoopComputeHook(const std::string& xclbin);
// Starts of the W2A8 and attention units, and sequencer starts computed, so far.
int NoopComputedRuns();
int NoopComputedSequencerRuns();
// The next `runs` starts of `kernel`'s compute units end in ERT_CMD_STATE_ERROR without
// computing: a card fault.
void NoopFailNextRuns(const std::string& kernel, int runs);

}  // namespace accllm::testing
