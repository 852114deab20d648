// What a v++ link for the U280 (xilinx_u280_gen3x16_xdma_1_202211_1) needs of a link configuration
// and what the card can carry, checked without Vitis on a parsed configuration (ParseLinkConfig
// already refuses unknown units, arguments and memories, and unbound buffer arguments):
//  - every compute unit is clocked by name ([clock] freqHz=<hz>:<cu>) at most at the platform's
//    300 MHz kernel clock, and placed (slr=<cu>:SLR0..SLR2);
//  - the arguments of one AXI master bundle share one binding: a master connects to one memory port;
//  - an HBM range names the slave port its master uses (HBM[a:b].p, a <= p <= b), so that the
//    traffic on each of the 32 HBM ports is decided here rather than by the linker;
//  - every AXI4-Stream argument is on exactly one stream_connect (sc=), output to input, both ends
//    of one width (the unit chains: fpga/kernels/unit_chain.h);
//  - at most 15 AXI masters share one HBM port (UG1393: up to 15 kernel interfaces per memory
//    port; v++ inserts one SmartConnect of up to 16 inputs per port).
#pragma once

#include <map>

#include "absl/status/status.h"
#include "fpga/host/xclbin_writer.h"

namespace accllm::fpga {

inline constexpr int kU280HbmPorts = 32;
inline constexpr int kMaxMastersPerHbmPort = 15;
inline constexpr int64_t kU280MaxKernelClockHz = 300'000'000;

absl::Status CheckU280LinkConfig(const XclbinDesign& design);

// AXI masters per HBM slave port (bundles, each counted once per compute unit).
std::map<int, int> HbmPortMasters(const XclbinDesign& design);

}  // namespace accllm::fpga
