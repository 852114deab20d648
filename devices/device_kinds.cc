#include "devices/device_kinds.h"

#include "absl/strings/str_cat.h"
#include "fpga/sim/fpga_sim_backend.h"
#ifdef ACCLLM_WITH_XRT
#include "fpga/host/xrt_backend.h"
#include "fpga/host/xrt_card.h"
#endif

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

#ifdef ACCLLM_WITH_XRT
int CardsFound(std::string* why_none) {
  const int n = fpga::CountCards();
  if (n == 0) *why_none = "no FPGA cards found";
  return n;
}
constexpr auto kMakeCard = fpga::MakeXrtBackend;
#else
int CardsFound(std::string* why_none) {
  *why_none = "this build has no XRT (configure with -DWITH_FPGA=ON where XRT is installed)";
  return 0;
}
absl::StatusOr<std::unique_ptr<Backend>> kMakeCard(const BackendOptions&, const AnyModel&) {
  return absl::UnavailableError("this build has no XRT");
}
#endif

constexpr DeviceKind kKinds[] = {
    {"cpu", false, MakeEngine<kCpu>, nullptr},
    {"reference", false, MakeEngine<kReference>, nullptr},
    {"fpga-sim", true, fpga::MakeFpgaSimBackend, nullptr},
    {"fpga", true, kMakeCard, CardsFound},
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
