#include "fpga/sim/fpga_sim_backend.h"

#include "fpga/sim/sim_kernels.h"

namespace accllm::fpga {

absl::StatusOr<std::unique_ptr<Backend>> MakeFpgaSimBackend(const BackendOptions& options, const AnyModel& model) {
  if (!model.packed) {
    return absl::InvalidArgumentError(
        "the FPGA runs packed W2A8KV4 models only; make one with `accllm quantize` (this model is fp32)");
  }
  if (options.kv != "kv4") return absl::InvalidArgumentError("the FPGA keeps its KV cache in KV4 (not --kv f32)");
  BackendOptions sim = options;
  sim.engine = "cpu";
  sim.kernels = &FpgaSimKernels();
  sim.label = "fpga-sim";
  return MakeBackend(sim, model);
}

}  // namespace accllm::fpga
