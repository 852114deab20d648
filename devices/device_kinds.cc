#include "devices/device_kinds.h"

#include "absl/strings/str_cat.h"
#include "fpga/sim/fpga_sim_backend.h"

namespace accllm {
namespace {

template <const char* kEngine>
absl::StatusOr<std::unique_ptr<Backend>> MakeEngine(const BackendOptions& options, const AnyModel& model) {
  BackendOptions o = options;
  o.engine = kEngine;
  return MakeBackend(o, model);
}
constexpr char kCpu[] = "cpu";
constexpr char kReference[] = "reference";

constexpr DeviceKind kKinds[] = {
    {"cpu", false, MakeEngine<kCpu>},
    {"reference", false, MakeEngine<kReference>},
    {"fpga-sim", true, fpga::MakeFpgaSimBackend},
};

}  // namespace

absl::StatusOr<const DeviceKind*> FindDeviceKind(const std::string& name) {
  for (const DeviceKind& kind : kKinds) {
    if (name == kind.name) return &kind;
  }
  return absl::NotFoundError(absl::StrCat("unknown device kind '", name, "' (known: ", KnownDeviceKinds(), ")"));
}

std::string KnownDeviceKinds() {
  std::string out;
  for (const DeviceKind& kind : kKinds) absl::StrAppend(&out, out.empty() ? "" : ", ", kind.name);
  return out;
}

}  // namespace accllm
