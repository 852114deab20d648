#include "tools/accllm/engine_flags.h"

#include "devices/device_kinds.h"

namespace accllm::cli {

void AddEngineOptions(CLI::App& cmd, BackendOptions& flags) {
  cmd.add_option("--engine,--device", flags.engine,
                 "reference: the fp32 oracle; cpu: the CPU engine (paged KV, Λ attention); fpga-sim: the "
                 "accelerator's kernels in C simulation (packed models). Default: cpu for packed models, "
                 "reference otherwise; fpga: a U280 card through XRT (--xclbin)")
      ->check(CLI::IsMember({"reference", "cpu", "fpga-sim", "fpga"}));
  cmd.add_option("--xclbin", flags.xclbin, "Accelerator image for --device fpga (fpga/build)");
  cmd.add_option("--kv", flags.kv, "KV cache precision for --engine cpu")
      ->check(CLI::IsMember({"f32", "kv4"}))->capture_default_str();
  cmd.add_flag("!--no-kv-rotation", flags.kv4_rotation, "KV4: store heads as they are, not Hadamard-rotated");
  cmd.add_option("--classifier", flags.classifier,
                 "Packed models' classifier: w8 (8-bit rows on the integer kernels, quantized at load) or f16 as "
                 "stored")
      ->check(CLI::IsMember({"f16", "w8"}))->capture_default_str();
  cmd.add_option("--sinks", flags.sinks, "Λ attention: sink tokens every query sees")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--window", flags.window, "Λ attention: recent tokens every query sees; 0 = full attention")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd.add_option("--threads", flags.threads, "Worker threads; 0 = one per hardware thread")->check(CLI::NonNegativeNumber);
  cmd.add_flag("--pin-threads", flags.pin_threads,
               "Pin each engine thread to its own CPU, one per physical core first");
  cmd.add_option("--page-tokens", flags.page_tokens, "Tokens per KV page")->check(CLI::PositiveNumber)->capture_default_str();
  cmd.add_option("--kv-pages", flags.kv_pages, "KV pages in the pool; 0 = enough for one full-length sequence")
      ->check(CLI::NonNegativeNumber);
  cmd.add_flag("--fake-a8", flags.fake_a8, "Round fp32 layers' inputs through int8 (quality experiments)");
  cmd.add_flag("--w2-as-f32", flags.w2_as_f32,
               "Packed models: run the W2 layers dequantized with fp32 activations (the weight format alone)");
}

absl::StatusOr<std::unique_ptr<Backend>> MakeEngine(const BackendOptions& flags, const AnyModel& model) {
  if (flags.engine.empty()) return MakeBackend(flags, model);
  absl::StatusOr<const DeviceKind*> kind = FindDeviceKind(flags.engine);
  if (!kind.ok()) return kind.status();
  return (*kind)->make(flags, model);
}

}  // namespace accllm::cli
