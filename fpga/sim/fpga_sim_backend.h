// The fpga-sim device: the accelerator's kernels in C simulation behind the Backend interface, so
// that `--device fpga-sim` works on any machine. Like the card, it runs packed W2A8KV4 models only.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/backend_factory.h"

namespace accllm::fpga {

absl::StatusOr<std::unique_ptr<Backend>> MakeFpgaSimBackend(const BackendOptions& options, const AnyModel& model);

}  // namespace accllm::fpga
