#include "fpga/host/kernel_signatures.h"

namespace accllm::fpga {

const std::vector<KernelSignature>& AcceleratorKernels() {
  static const std::vector<KernelSignature> kernels = {
      {"accllm_sequencer", {{"program", true, "gmem0", 8}, {"count", false, "", 4}}},
      {"accllm_w2a8",
       {{"codes", true, "gmem0", 8}, {"sparse_index", true, "gmem0", 8}, {"scales", true, "gmem0", 8},
        {"zeros", true, "gmem0", 8}, {"activations", true, "gmem1", 8}, {"group_sums", true, "gmem1", 8},
        {"act_scales", true, "gmem1", 8}, {"out", true, "gmem1", 8}, {"rows", false, "", 4},
        {"cols_padded", false, "", 4}, {"group_size", false, "", 4}, {"sparse24", false, "", 4},
        {"tokens", false, "", 4}, {"ldy", false, "", 4}, {"tile_begin", false, "", 4}, {"tile_end", false, "", 4}}},
      {"accllm_kv4_attention",
       {{"q", true, "gmem0", 8}, {"q_sink", true, "gmem0", 8}, {"item_runs", true, "gmem0", 8},
        {"item_sink_runs", true, "gmem0", 8}, {"items", false, "", 4}, {"kv0", true, "gmem1", 8},
        {"kv1", true, "gmem2", 8}, {"kv2", true, "gmem3", 8}, {"kv3", true, "gmem4", 8},
        {"key_params_offset", false, "", 4}, {"value_codes_offset", false, "", 4},
        {"value_params_offset", false, "", 4}, {"page_tokens", false, "", 4}, {"first_vector", false, "", 4},
        {"run_start", true, "gmem0", 8}, {"run_count", true, "gmem0", 8}, {"head_size", false, "", 4},
        {"out", true, "gmem0", 8}}},
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
