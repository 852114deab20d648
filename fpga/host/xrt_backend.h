// The fpga device: a U280 card driven through XRT behind the Backend interface. The card runs the
// W2 linear layers (the weight traffic) on its W2A8 units; norms, RoPE, KV4 attention and the
// classifier run on the host engine around it for now (docs/FPGA.md lists what moves next).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/backend_factory.h"

namespace accllm::fpga {

// Opens card options.device_index with options.xclbin and uploads the model's W2 layers.
absl::StatusOr<std::unique_ptr<Backend>> MakeXrtBackend(const BackendOptions& options, const AnyModel& model);

}  // namespace accllm::fpga
