#include "fpga/host/kernel_signatures.h"

#include "fpga/kernels/unit_chain.h"

namespace accllm::fpga {
namespace {

constexpr int kCommand = sizeof(hls::UnitCommand), kToken = sizeof(hls::UnitToken);
KernelArg In(const char* name, int bytes) { return {name, false, "", bytes, StreamDirection::kIn}; }
KernelArg Out(const char* name, int bytes) { return {name, false, "", bytes, StreamDirection::kOut}; }

}  // namespace

const std::vector<KernelSignature>& AcceleratorKernels() {
  static const std::vector<KernelSignature> kernels = {
      {"accllm_sequencer",
       {{"program", true, "gmem0", 8}, {"count", false, "", 4}, {"shared_floats", true, "gmem1", 8},
        {"shared_ints", true, "gmem1", 8}, {"shared_codes", true, "gmem1", 8}, {"shared_bytes", true, "gmem1", 8},
        {"shared_halves", true, "gmem1", 8}, {"shared_words", true, "gmem1", 8}, {"shared_base", false, "", 8},
        {"kv0", true, "gmem2", 8}, {"kv1", true, "gmem3", 8}, {"kv2", true, "gmem4", 8}, {"kv3", true, "gmem5", 8},
        Out("w2a8_commands", kCommand), In("w2a8_returned", kCommand), Out("w2a8_seed", kToken),
        In("w2a8_done", kToken), Out("attention_commands", kCommand), In("attention_returned", kCommand),
        Out("attention_seed", kToken), In("attention_done", kToken)}},
      {"accllm_w2a8",
       {{"weights", true, "gmem0", 8}, {"weight_halves", true, "gmem0", 8}, {"weight_bytes", true, "gmem0", 8},
        {"weight_floats", true, "gmem0", 8}, {"weight_base", false, "", 8}, {"shared_words", true, "gmem1", 8},
        {"shared_codes", true, "gmem1", 8}, {"shared_ints", true, "gmem1", 8}, {"shared_floats", true, "gmem1", 8},
        {"shared_base", false, "", 8}, In("commands_in", kCommand), Out("commands_out", kCommand),
        In("done_in", kToken), Out("done_out", kToken)}},
      {"accllm_kv4_attention",
       {{"shared_floats", true, "gmem0", 8}, {"shared_ints", true, "gmem0", 8}, {"shared_words", true, "gmem0", 8},
        {"shared_base", false, "", 8}, {"kv0", true, "gmem1", 8}, {"kv1", true, "gmem2", 8},
        {"kv2", true, "gmem3", 8}, {"kv3", true, "gmem4", 8}, In("commands_in", kCommand),
        Out("commands_out", kCommand), In("done_in", kToken), Out("done_out", kToken)}},
      {"accllm_rmsnorm_a8",
       {{"x", true, "gmem0", 8}, {"weight", true, "gmem1", 8}, {"size", false, "", 4}, {"eps", false, "", 4},
        {"cols_padded", false, "", 4}, {"group_size", false, "", 4}, {"codes", true, "gmem0", 8},
        {"act_scale", true, "gmem0", 8}, {"group_sums", true, "gmem0", 8}}},
      {"accllm_rope",
       {{"vec", true, "gmem0", 8}, {"n", false, "", 4}, {"head_size", false, "", 4}, {"pos", false, "", 4},
        {"theta", false, "", 4}}},
      {"accllm_swiglu", {{"gate", true, "gmem0", 8}, {"up", true, "gmem1", 8}, {"size", false, "", 4}}},
      {"accllm_hadamard", {{"vectors", true, "gmem0", 8}, {"n", false, "", 4}, {"count", false, "", 4}}},
  };
  return kernels;
}

const KernelSignature* FindKernel(const std::string& name) {
  for (const KernelSignature& k : AcceleratorKernels()) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

int ArgIndex(const KernelSignature& kernel, const std::string& arg) {
  for (std::size_t i = 0; i < kernel.args.size(); ++i) {
    if (arg == kernel.args[i].name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace accllm::fpga
