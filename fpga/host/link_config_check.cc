#include "fpga/host/link_config_check.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "fpga/host/kernel_signatures.h"
#include "runtime/common/status_macros.h"

namespace accllm::fpga {
namespace {

bool SameBinding(const MemoryBinding& a, const MemoryBinding& b) {
  return a.type == b.type && a.first == b.first && a.last == b.last && a.port == b.port;
}

// The binding of each AXI master bundle of `u` (its first argument's).
std::map<std::string, MemoryBinding> BundleBindings(const ComputeUnit& u) {
  std::map<std::string, MemoryBinding> bundles;
  for (const KernelArg& a : FindKernel(u.kernel)->args) {
    if (a.buffer && u.bindings.contains(a.name)) bundles.emplace(a.bundle, u.bindings.at(a.name));
  }
  return bundles;
}

const KernelArg& ArgOf(const XclbinDesign& design, const std::string& instance, const std::string& port) {
  for (const ComputeUnit& u : design.units) {
    if (u.instance == instance) {
      const KernelSignature& k = *FindKernel(u.kernel);
      return k.args[ArgIndex(k, port)];
    }
  }
  __builtin_trap();  // ParseLinkConfig resolved every connection's ends
}

// Every stream argument of every unit on exactly one connection, both ends of the same width.
absl::Status CheckStreams(const XclbinDesign& design) {
  std::map<std::string, int> uses;
  for (const StreamConnection& c : design.streams) {
    ++uses[c.from_unit + "." + c.from_port];
    ++uses[c.to_unit + "." + c.to_port];
    const int from = ArgOf(design, c.from_unit, c.from_port).bytes, to = ArgOf(design, c.to_unit, c.to_port).bytes;
    if (from != to) {
      return absl::FailedPreconditionError(absl::StrCat(c.from_unit, ".", c.from_port, " sends ", from,
                                                        "-byte words but ", c.to_unit, ".", c.to_port, " takes ", to));
    }
  }
  for (const ComputeUnit& u : design.units) {
    for (const KernelArg& a : FindKernel(u.kernel)->args) {
      if (!a.is_stream()) continue;
      const int n = uses[u.instance + "." + a.name];
      if (n != 1) {
        return absl::FailedPreconditionError(
            absl::StrCat(u.instance, ".", a.name, n == 0 ? " is not connected (sc=)" : " is connected more than once"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::map<int, int> HbmPortMasters(const XclbinDesign& design) {
  std::map<int, int> masters;
  for (const ComputeUnit& u : design.units) {
    for (const auto& [bundle, b] : BundleBindings(u)) {
      if (b.type == "HBM") ++masters[b.port >= 0 ? b.port : b.first];
    }
  }
  return masters;
}

absl::Status CheckU280LinkConfig(const XclbinDesign& design) {
  for (const ComputeUnit& u : design.units) {
    if (u.clock_hz == 0) return absl::FailedPreconditionError(absl::StrCat(u.instance, " has no [clock] freqHz= line"));
    if (u.clock_hz > kU280MaxKernelClockHz) {
      return absl::FailedPreconditionError(
          absl::StrCat(u.instance, " is clocked at ", u.clock_hz, " Hz, above the U280's ", kU280MaxKernelClockHz));
    }
    if (u.slr != "SLR0" && u.slr != "SLR1" && u.slr != "SLR2") {
      return absl::FailedPreconditionError(absl::StrCat(u.instance, " is placed in '", u.slr, "', not SLR0, SLR1 or SLR2"));
    }
    const std::map<std::string, MemoryBinding> bundles = BundleBindings(u);
    for (const KernelArg& a : FindKernel(u.kernel)->args) {
      if (!a.buffer) continue;
      const MemoryBinding& b = u.bindings.at(a.name);
      if (!SameBinding(b, bundles.at(a.bundle))) {
        return absl::FailedPreconditionError(absl::StrCat(u.instance, ".", a.name, " is bound apart from the other "
                                                          "arguments of its AXI master ", a.bundle));
      }
      if (b.type == "HBM" && b.first != b.last && (b.port < b.first || b.port > b.last)) {
        return absl::FailedPreconditionError(absl::StrCat(u.instance, ".", a.name, ": HBM[", b.first, ":", b.last,
                                                          "] needs the port its master uses, inside the range (.p)"));
      }
    }
  }
  RETURN_IF_ERROR(CheckStreams(design));
  for (const auto& [port, masters] : HbmPortMasters(design)) {
    if (port < 0 || port >= kU280HbmPorts) return absl::FailedPreconditionError(absl::StrCat("no HBM port ", port));
    if (masters > kMaxMastersPerHbmPort) {
      return absl::FailedPreconditionError(absl::StrCat(masters, " AXI masters on HBM port ", port, ", at most ",
                                                        kMaxMastersPerHbmPort));
    }
  }
  return absl::OkStatus();
}

}  // namespace accllm::fpga
