// Writes an xclbin (the container XRT loads) for the accelerator's design without Vitis: kernel
// metadata from the kernels' signatures, compute units and their memory banks from the v++ link
// configuration (fpga/build/u280.cfg), a U280-like memory topology (32 HBM pseudo-channels,
// 2 DDR4 banks, PLRAM). It carries no bitstream: it is for XRT's emulation shims and for tests of
// the host code. Written against XRT's public xclbin.h; we keep no copy of Xilinx's xclbinutil.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace accllm::fpga {

// One sp= binding: `type[first:last].port`, e.g. HBM[24:27].25 (port -1: not named, v++ picks).
struct MemoryBinding {
  std::string type;  // HBM, DDR, PLRAM
  int first = 0, last = 0;
  int port = -1;
};

// The memory tag an emulation xclbin connects a binding to: its range's first bank, e.g. HBM[24].
std::string FirstBank(const MemoryBinding& b);

struct ComputeUnit {
  std::string kernel;    // e.g. accllm_w2a8
  std::string instance;  // e.g. accllm_w2a8_3
  std::map<std::string, MemoryBinding> bindings;  // argument -> the sp= binding as written
  int64_t clock_hz = 0;  // [clock] freqHz=...:instance; 0 if none
  std::string slr;       // slr=instance:SLRn; empty if none
};

// One stream_connect= (sc=) line: an AXI4-Stream output of one unit to an input of another.
struct StreamConnection {
  std::string from_unit, from_port, to_unit, to_port;
  int depth = 0;  // FIFO depth; 0 if not given
};

struct XclbinDesign {
  std::string platform = "xilinx_u280_gen3x16_xdma_1_202211_1";
  int clock_mhz = 225;
  std::vector<ComputeUnit> units;
  std::vector<StreamConnection> streams;
};

// The compute units, bank bindings, stream connections, clocks and SLRs of a v++ link
// configuration (its nk=, sp=, sc= (stream_connect=), [clock] freqHz= and slr= lines; for the xclbin, a bank range such as HBM[24:27] binds to its
// first bank). Errors name the line.
absl::StatusOr<XclbinDesign> ParseLinkConfig(const std::string& cfg_text);

// The memory tags of the topology, in mem_topology order: HBM[0..31], DDR[0..1], PLRAM[0..5].
std::vector<std::string> U280MemoryTags();

// The xclbin bytes for `design`.
absl::StatusOr<std::string> BuildXclbin(const XclbinDesign& design);

}  // namespace accllm::fpga
