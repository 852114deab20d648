// The kinds of device this build can run on, for `--devices` (server) and `--device` (CLI):
//   cpu        the CPU engine (W2A8KV4 for packed models, fp32 for fp32 models); a fallback device
//   reference  the fp32 oracle (fp32 models only); a fallback device
//   fpga-sim   the U280 accelerator's kernels in C simulation (packed models only); an accelerator
//   fpga       U280 cards through XRT (packed models, --xclbin); one device per card found
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/backend_factory.h"

namespace accllm {

struct DeviceKind {
  const char* name;
  bool accelerator;
  absl::StatusOr<std::unique_ptr<Backend>> (*make)(const BackendOptions&, const AnyModel&);
  // Hardware kinds: how many devices exist, and why none when 0. Null: as many as asked for.
  int (*available)(std::string* why_none);
};

// The kind called `name`, or NOT_FOUND naming the kinds there are.
absl::StatusOr<const DeviceKind*> FindDeviceKind(const std::string& name);
std::string KnownDeviceKinds();  // "cpu, reference, fpga-sim"

}  // namespace accllm
