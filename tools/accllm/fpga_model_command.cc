// accllm fpga-model: the estimated speed and power of the accelerator on a U280 for a model shape,
// held against the published figures and the HBM roofline.
#include <algorithm>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "fpga/device_limits.h"
#include "fpga/kernels/sequencer.h"
#include "fpga/model/perf_model.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/int_list.h"

namespace accllm::cli {
namespace {

const char* StepOpName(hls::StepOp op) {
  switch (op) {
    case hls::StepOp::kEmbed: return "embedding";
    case hls::StepOp::kResidualNormA8: return "residual + RMSNorm + A8";
    case hls::StepOp::kA8: return "A8";
    case hls::StepOp::kW2A8: return "W2A8 (staging on its units)";
    case hls::StepOp::kW8A8: return "W8 classifier";
    case hls::StepOp::kF16: return "fp16 classifier";
    case hls::StepOp::kRopeKvWrite: return "RoPE + K/V rotation + KV4 write";
    case hls::StepOp::kAttention: return "attention (query and output rotations)";
    case hls::StepOp::kSwiGlu: return "SwiGLU (+ FFN Hadamard)";
    case hls::StepOp::kGatherRows: return "row gathers";
    case hls::StepOp::kStop: return "stop";
  }
  return "?";
}

// Where the element-wise units' time goes in a step: which descriptors to make faster first.
void PrintElementwiseByOp(const fpga::Estimate& e) {
  std::printf("\n| element-wise work (batch 1) | descriptors | cycles | share |\n|---|---:|---:|---:|\n");
  const auto row = [&](const char* name, int64_t count, int64_t cycles) {
    std::printf("| %s | %lld | %lld | %.1f%% |\n", name, static_cast<long long>(count), static_cast<long long>(cycles),
                100.0 * static_cast<double>(cycles) / static_cast<double>(std::max<int64_t>(1, e.elementwise_cycles)));
  };
  for (std::size_t op = 0; op < e.elementwise_by_op.size(); ++op) {
    const fpga::Estimate::OpCycles& c = e.elementwise_by_op[op];
    if (c.cycles > 0) row(StepOpName(static_cast<hls::StepOp>(op)), c.descriptors, c.cycles);
  }
  row("the sequencer (reading; the unit chains' round trips)", e.descriptors, e.sequencer_cycles);
}

struct FpgaModelFlags {
  std::string shape = "llama2-7b";
  std::string batches = "1,4,8";
  std::string contexts = "128,1024,4096";
  std::string cards = "1,2,3,4";
  int context = 1024;
  int window = 1024;
  int sinks = 4;
  int group_size = 128;
  double sparse_fraction = 0;
  bool f16_classifier = false;
  fpga::AcceleratorDesign design;
};

// The batch sizes, card counts and contexts the tables are made for.
absl::StatusOr<std::vector<int>> ParseList(const std::string& text, const char* what) {
  constexpr int64_t kMax = 1 << 20;
  absl::StatusOr<std::vector<int64_t>> values = ParsePositiveList(text, what, kMax);
  if (!values.ok()) return values.status();
  return std::vector<int>(values->begin(), values->end());
}

int Run(const FpgaModelFlags& f) {
  absl::StatusOr<LlamaConfig> config = ParseShape(f.shape);
  if (!config.ok()) return ReportError(config.status());
  absl::StatusOr<std::vector<int>> batches = ParseList(f.batches, "batch size");
  if (!batches.ok()) return ReportError(batches.status());
  absl::StatusOr<std::vector<int>> cards = ParseList(f.cards, "card count");
  if (!cards.ok()) return ReportError(cards.status());

  const fpga::U280Platform platform;
  fpga::Workload work;
  work.config = *config;
  work.group_size = f.group_size;
  work.sparse_fraction = f.sparse_fraction;
  work.context = f.context;
  work.window = f.window;
  work.sinks = f.sinks;
  work.w8_classifier = !f.f16_classifier;
  const fpga::Estimate one = fpga::EstimateAccelerator(platform, f.design, work);

  std::printf("## %s on one U280, batch 1, context %d%s\n\n", f.shape.c_str(), f.context,
              f.window > 0 ? (" (Λ window " + std::to_string(f.window) + ")").c_str() : "");
  std::printf("| design | decode tokens/s | W | J/token |\n|---|---:|---:|---:|\n");
  std::printf("| this model (%d W2A8 units x %d token lanes, %.0f MHz) | %.1f | %.1f | %.3f |\n", f.design.w2a8_units,
              f.design.token_lanes, f.design.clock_mhz, one.tokens_per_s, one.watts, one.joules_per_token);
  for (const fpga::PublishedFigure& p : fpga::PublishedLlama2_7bOnU280()) {
    if (p.watts > 0) {
      std::printf("| %s | %.1f | %.1f | %.3f |\n", p.design, p.tokens_per_s, p.watts, p.watts / p.tokens_per_s);
    } else {
      std::printf("| %s | %.1f | - | - |\n", p.design, p.tokens_per_s);
    }
  }
  std::printf("| HBM roofline (460 GB/s, weights + KV) | %.1f | - | - |\n\n", one.hbm_roofline_tokens_per_s);
  std::printf("Per step: %.3f GB weights, %.3f GB KV; DSP %d of %d, URAM %d of %d (%s; LUT and BRAM need synthesis)\n",
              one.weight_bytes / 1e9,
              one.kv_bytes / 1e9, one.dsp_used, platform.dsp, one.uram_used, platform.uram,
              one.fits ? "fits" : "DOES NOT FIT");
  std::printf("KV cache: %d pages of %d tokens per %d-token stream; the KV channels (%s) hold %d such streams\n\n",
              one.kv_pages_per_stream, work.page_tokens, f.context, fpga::kKvChannelNames, one.kv_streams);

  std::printf("| batch | step ms | linear | classifier | attention | element-wise | bound | tokens/s | W | J/token | fits |\n"
              "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n");
  for (int b : *batches) {
    work.batch = b;
    const fpga::Estimate e = fpga::EstimateAccelerator(platform, f.design, work);
    std::printf("| %d | %.2f | %.2f | %.2f | %.2f | %.3f | %s | %.1f | %.1f | %.3f | %s |\n", b, e.step_ms, e.linear_ms,
                e.classifier_ms, e.attention_ms, e.elementwise_ms, e.bound.c_str(), e.tokens_per_s, e.watts,
                e.joules_per_token, e.fits ? "yes" : "no (KV banks)");
  }
  std::printf("\nDecode tokens/s across cards (each card holds the whole model and its own batch):\n\n| cards |");
  for (int b : *batches) std::printf(" batch %d/card |", b);
  std::printf("\n|---:|");
  for (std::size_t i = 0; i < batches->size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (int n : *cards) {
    std::printf("| %d |", n);
    for (int b : *batches) {
      work.batch = b;
      work.cards = n;
      std::printf(" %.1f |", fpga::EstimateAccelerator(platform, f.design, work).tokens_per_s);
    }
    std::printf("\n");
  }
  work.cards = 1;
  work.batch = 1;
  // Decode tokens/s over contexts and batches.
  absl::StatusOr<std::vector<int>> contexts = ParseList(f.contexts, "context");
  if (!contexts.ok()) return ReportError(contexts.status());
  std::printf("\nDecode tokens/s on one card%s:\n\n| context |",
              f.window > 0 ? (" (Λ: " + std::to_string(f.sinks) + " sinks, window " + std::to_string(f.window) + ")").c_str() : "");
  for (int b : *batches) std::printf(" batch %d |", b);
  std::printf("\n|---:|");
  for (std::size_t i = 0; i < batches->size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (int ctx : *contexts) {
    std::printf("| %d |", ctx);
    for (int b : *batches) {
      fpga::Workload at = work;
      at.context = ctx;
      at.batch = b;
      const fpga::Estimate e = fpga::EstimateAccelerator(platform, f.design, at);
      std::printf(" %.1f%s |", e.tokens_per_s, e.fits ? "" : " (KV does not fit)");
    }
    std::printf("\n");
  }
  std::printf("\nThe step at batch 1, from its %lld descriptors: element-wise units and sequencer %lld cycles "
              "(%.2f ms), the %s classifier %lld unit cycles in all (%.2f ms).\n",
              static_cast<long long>(one.descriptors), static_cast<long long>(one.elementwise_cycles), one.elementwise_ms,
              f.f16_classifier ? "fp16" : "W8", static_cast<long long>(one.classifier_unit_cycles), one.classifier_ms);
  PrintElementwiseByOp(one);
  std::printf("\nPrefill of a %d-token prompt: %.1f tokens/s\n", f.context,
              fpga::EstimateAccelerator(platform, f.design, work).prefill_tokens_per_s);
  return 0;
}

}  // namespace

void AddFpgaModelCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<FpgaModelFlags>();
  CLI::App* cmd = app.add_subcommand("fpga-model", "Estimate the accelerator's speed and power on a U280");
  cmd->add_option("--shape", flags->shape, "Model shape (llama2-7b, tinyllama-1.1b, dim=...,ffn=...)")->capture_default_str();
  cmd->add_option("--batch", flags->batches, "Batch sizes per card")->capture_default_str();
  cmd->add_option("--cards", flags->cards, "Card counts")->capture_default_str();
  cmd->add_option("--contexts", flags->contexts, "Contexts for the summary table")->capture_default_str();
  cmd->add_option("--context", flags->context, "Tokens per sequence so far (and the prompt for prefill)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--window", flags->window, "Λ window (0 = full attention)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--sinks", flags->sinks, "Λ sink tokens")->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--group-size", flags->group_size, "W2 group size")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--sparse-fraction", flags->sparse_fraction, "Share of linear weights in 2:4 layers")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--clock-mhz", flags->design.clock_mhz, "Kernel clock")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--units", flags->design.w2a8_units, "W2A8 compute units (one per HBM channel)")
      ->check(CLI::Range(1, 32))->capture_default_str();
  cmd->add_option("--token-lanes", flags->design.token_lanes, "Tokens each weight beat is applied to per cycle")
      ->check(CLI::Range(1, 64))->capture_default_str();
  cmd->add_flag("--f16-classifier", flags->f16_classifier,
                "The classifier in fp16 (the sequencer's functional unit) instead of 8 bits");
  cmd->callback([flags, exit_code] { *exit_code = Run(*flags); });
}

}  // namespace accllm::cli
