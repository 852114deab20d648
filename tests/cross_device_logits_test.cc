// One set of logits on every device, on a real model: gutenberg30M (head size 64, the size at
// which the SIMD paths' float sums used to part from the scalar path's), quantized as a user would
// (RTN), prefilling held-out text and decoding greedily past a Λ window with sinks. Every CPU
// kernel path and the simulated accelerator give the same logits, bit for bit, at every step. The
// XRT flow (noop emulation) is held to the same in fpga_host_test.cc.
#include "fpga/sim/fpga_sim_backend.h"
#include "gmock/gmock.h"
#include "runtime/cpu/kernels.h"
#include "tests/real_model_logits.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ExpectSameLogits;
using ::accllm::testing::GreedyLogits;
using ::accllm::testing::ScratchDir;

constexpr int kPromptTokens = 160;
constexpr int kDecodeSteps = 24;

TEST(CrossDeviceLogitsTest, EveryKernelPathAndFpgaSimGiveTheScalarPathsLogits) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(AnyModel model, ::accllm::testing::PackedGutenberg30M(dir.path()));
  ASSERT_EQ(model.config().head_size(), 64);
  ASSERT_OK_AND_ASSIGN(std::vector<int> prompt, ::accllm::testing::GutenbergDevPrompt(kPromptTokens));
  BackendOptions options;
  options.engine = "cpu";
  options.window = 64;  // the prompt alone runs past it: sink runs and a sliding window
  options.sinks = 4;
  options.kernels = &kScalarKernels;
  ASSERT_OK_AND_ASSIGN(auto scalar, MakeBackend(options, model));
  const std::vector<std::vector<float>> want = GreedyLogits(*scalar, prompt, kDecodeSteps);
  for (CpuPath path : kAllCpuPaths) {
    absl::StatusOr<const CpuKernels*> kernels = KernelsFor(path);
    if (!kernels.ok()) continue;  // not on this CPU
    SCOPED_TRACE((*kernels)->name);
    options.kernels = *kernels;
    ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(options, model));
    ExpectSameLogits(GreedyLogits(*cpu, prompt, kDecodeSteps), want);
  }
  options.kernels = nullptr;
  ASSERT_OK_AND_ASSIGN(auto fpga, fpga::MakeFpgaSimBackend(options, model));
  SCOPED_TRACE(fpga->name());
  ExpectSameLogits(GreedyLogits(*fpga, prompt, kDecodeSteps), want);
}

}  // namespace
}  // namespace accllm
