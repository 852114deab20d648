// accllm bench-quantize: what `accllm quantize` (rotation + GPTQ, --no-block-ap) costs per layer at
// any LLaMA shape, stage by stage, on synthesized weights and inputs (the time does not depend on
// their values), and the whole model's total projected from it. The stages are the quantize
// command's own code: the Gram products calibration adds per token, the Hessian factorizations,
// GPTQ with the scale refit, the output-error report; the calibration forward pass is timed as
// the layer's seven fp32 products as calibration runs them (sgemm), which are most of it.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include <sys/resource.h>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/model/synthesize.h"
#include "runtime/quant/calibration.h"
#include "runtime/quant/gptq.h"
#include "runtime/quant/layer_by_layer.h"
#include "runtime/quant/linalg.h"
#include "runtime/common/hadamard.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/heap_reuse.h"

namespace accllm::cli {
namespace {

struct QuantizeBenchFlags {
  std::string shape = "llama2-7b";
  int tokens = 4096;
  int layers = 1;
  int group_size = 128;
  int threads = 0;
  bool refit_scales = true;
  bool pipeline = false;
};

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Calibration-like inputs: Gaussian, each channel with its own log-normal scale (real activations
// have a few loud channels), so that the Hessian is far from a multiple of the identity.
std::vector<float> SynthesizeInputs(int tokens, int cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> channel(cols), x(static_cast<std::size_t>(tokens) * cols);
  for (float& s : channel) s = std::exp(0.75f * normal(rng));
  for (int t = 0; t < tokens; ++t) {
    for (int j = 0; j < cols; ++j) x[static_cast<std::size_t>(t) * cols + j] = channel[j] * normal(rng);
  }
  return x;
}

double PeakResidentGb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // kB
}

// --pipeline: the quantize command's own layer-by-layer pipeline without block reconstruction
// (`quantize --layer-by-layer --no-block-ap`: rotation, calibration through each layer, GPTQ, the report) over the first
// --layers layers of a synthesized model, with calibration sequences of random token ids; what it
// holds is what a real checkpoint of the shape needs (one layer in fp32, the hidden states).
int RunPipelineBench(const QuantizeBenchFlags& flags, LlamaConfig c) {
  const int all_layers = c.n_layers;
  c.n_layers = flags.layers;
  const SyntheticWeights weights(c, 1);
  const int per_sequence = std::min(c.max_seq_len, 2048);
  std::vector<std::vector<int>> sequences;
  std::mt19937_64 rng(3);
  for (int left = flags.tokens; left > 0; left -= per_sequence) {
    std::vector<int>& seq = sequences.emplace_back(std::min(left, per_sequence));
    seq[0] = 1;  // BOS
    for (std::size_t t = 1; t < seq.size(); ++t) seq[t] = 3 + static_cast<int>(rng() % static_cast<uint64_t>(c.vocab_size - 3));
  }
  LayerByLayerOptions options;
  options.quantize.group_size = flags.group_size;
  options.quantize.refit_scales = flags.refit_scales;
  options.quantize.threads = flags.threads;
  options.rotate = IsPowerOfTwo(c.dim);
  std::printf("bench-quantize --pipeline: %s (dim %d, ffn %d), %d of %d layers, %d calibration tokens in %zu sequences, "
              "group %d, %s, %s\n",
              flags.shape.c_str(), c.dim, c.hidden_dim, c.n_layers, all_layers, flags.tokens, sequences.size(),
              flags.group_size, options.rotate ? "rotated" : "not rotated", flags.refit_scales ? "scale refit" : "no refit");
  std::vector<double> calibrated(c.n_layers), quantized(c.n_layers), peak(c.n_layers);
  auto mark = Clock::now();
  const auto start = mark;
  LayerByLayerProgress progress;
  progress.on_linear = [&](const LayerReport& r, int done, int total) {
    if (done % 7 != 0) return;  // a layer's last linear
    quantized[r.id.layer] = Since(mark);
    peak[r.id.layer] = PeakResidentGb();
    mark = Clock::now();
    std::fprintf(stderr, "layer %d quantized (%d/%d)\n", r.id.layer, done, total);
  };
  progress.on_calibrated = [&](int layer, double) {  // since the last layer's end: reading, rotating, calibrating
    calibrated[layer] = Since(mark);
    mark = Clock::now();
  };
  absl::StatusOr<PackedContents> packed = QuantizeLayerByLayer(weights, sequences, options, progress);
  if (!packed.ok()) return ReportError(packed.status());
  const double total = Since(start);
  std::printf("\n| layer | read + rotate + calibrate s | GPTQ%s + report s | peak RSS GB |\n|---:|---:|---:|---:|\n",
              flags.refit_scales ? " + refit" : "");
  double per_layer = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    std::printf("| %d | %.1f | %.1f | %.2f |\n", l, calibrated[l], quantized[l], peak[l]);
    per_layer += calibrated[l] + quantized[l];
  }
  per_layer /= c.n_layers;
  std::printf("\n%d layers in %.0f s (%.1f s per layer; the rest reads the classifier and packs); "
              "all %d layers projected: %.1f min; peak resident memory %.2f GB\n",
              c.n_layers, total, per_layer, all_layers, (total + per_layer * (all_layers - c.n_layers)) / 60.0, PeakResidentGb());
  return 0;
}

int RunQuantizeBench(const QuantizeBenchFlags& flags) {
  ReuseFreedMemory();
  absl::StatusOr<LlamaConfig> config = ParseShape(flags.shape);
  if (!config.ok()) return ReportError(config.status());
  const LlamaConfig& c = *config;
  if (flags.layers > c.n_layers) {
    return ReportError(absl::InvalidArgumentError(absl::StrCat("--layers ", flags.layers, " exceeds the shape's ", c.n_layers)));
  }
  if (flags.pipeline) return RunPipelineBench(flags, c);
  ThreadPool pool(flags.threads);
  const ScopedGemmThreads blas_threads(flags.threads);  // the forward and Gram products, factorizations
  const SyntheticWeights weights(c, 1);
  std::printf("bench-quantize: %s (dim %d, ffn %d, %d layers), %d calibration tokens, group %d, %d threads\n",
              flags.shape.c_str(), c.dim, c.hidden_dim, c.n_layers, flags.tokens, flags.group_size, pool.threads());

  // Per input: attention (q/k/v), attention output (o), FFN (gate/up), FFN down; the matrices
  // reading one input share its Gram matrix and Hessian, as in the quantize command.
  const std::vector<std::vector<TensorKind>> readers = {{TensorKind::kWq, TensorKind::kWk, TensorKind::kWv},
                                                        {TensorKind::kWo},
                                                        {TensorKind::kW1, TensorKind::kW3},
                                                        {TensorKind::kW2}};
  double forward_s = 0, gram_s = 0, hessian_s = 0, gptq_s = 0, report_s = 0;
  for (int layer = 0; layer < flags.layers; ++layer) {
    for (std::size_t input = 0; input < readers.size(); ++input) {
      const int cols = readers[input][0] == TensorKind::kW2 ? c.hidden_dim : c.dim;
      const std::vector<float> x = SynthesizeInputs(flags.tokens, cols, 17 * layer + input);
      InputStats stats;
      stats.cols = cols;
      stats.gram.assign(static_cast<std::size_t>(cols) * cols, 0.0);
      auto start = Clock::now();
      std::vector<float> scratch;
      for (int t0 = 0; t0 < flags.tokens; t0 += 512) {
        stats.AddLower(x.data() + static_cast<std::size_t>(t0) * cols, std::min(512, flags.tokens - t0), cols, scratch);
      }
      stats.MirrorLower();
      gram_s += Since(start);
      GptqOptions options;
      options.refit_scales = flags.refit_scales;
      start = Clock::now();
      absl::StatusOr<GptqHessian> hessian = PrepareGptqHessian(stats.gram, cols, options);
      if (!hessian.ok()) return ReportError(hessian.status());
      hessian_s += Since(start);
      for (TensorKind reader : readers[input]) {
        const TensorId id{reader, layer};
        const int rows = static_cast<int>(TensorShape(c, reader)[0]);
        std::vector<float> w(static_cast<std::size_t>(rows) * cols);
        weights.Fill(id, w);
        // The calibration forward pass's product for this matrix, as calibration runs it (sgemm
        // on BLAS's threads, 512-token steps).
        std::vector<float> y(static_cast<std::size_t>(512) * rows);
        start = Clock::now();
        for (int t0 = 0; t0 < flags.tokens; t0 += 512) {
          const int n = std::min(512, flags.tokens - t0);
          Gemm(Trans::kNo, Trans::kYes, n, rows, cols, 1.0f, x.data() + static_cast<std::size_t>(t0) * cols, cols, w.data(),
               cols, 0.0f, y.data(), rows);
        }
        forward_s += Since(start);
        start = Clock::now();
        double error = -1;
        absl::StatusOr<W2Matrix> m = QuantizeW2Gptq(w, {rows, cols, flags.group_size, false}, *hessian, {}, &pool, {}, &error);
        if (!m.ok()) return ReportError(m.status());
        gptq_s += Since(start);
        if (error < 0) {  // no refit to give it
          start = Clock::now();
          error = RelativeOutputError(w, m->view(), stats.gram, &pool);
          report_s += Since(start);
        }
        std::fprintf(stderr, "%-40s %5d x %-5d output error %.4f\n", HfTensorName(id).c_str(), rows, cols, error);
      }
    }
  }
  const double per_layer = 1.0 / flags.layers;
  const double total = forward_s + gram_s + hessian_s + gptq_s + report_s;
  std::printf("\n| stage | s per layer | s for all %d layers |\n|---|---:|---:|\n", c.n_layers);
  const auto row = [&](const char* name, double s) {
    std::printf("| %s | %.2f | %.0f |\n", name, s * per_layer, s * per_layer * c.n_layers);
  };
  row("calibration forward: the 7 fp32 products (sgemm)", forward_s);
  row("calibration Gram products (BLAS)", gram_s);
  row("Hessian factorizations (LAPACK), one per input", hessian_s);
  row(flags.refit_scales ? "GPTQ + scale refit" : "GPTQ", gptq_s);
  row("output-error report (free with the refit)", report_s);
  row("total", total);
  std::printf("\nLeft out: the calibration pass's attention, norms and classifier, and loading the model.\n");
  return 0;
}

}  // namespace

void AddQuantizeBenchCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<QuantizeBenchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bench-quantize", "Time GPTQ quantization per layer, stage by stage, at a real shape (synthesized weights and inputs)");
  cmd->add_option("--shape", flags->shape, "Model shape: llama2-7b, tinyllama-1.1b, or dim=...,ffn=...")->capture_default_str();
  cmd->add_option("--tokens", flags->tokens, "Calibration tokens")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--layers", flags->layers, "Layers to quantize (the rest projected)")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--group-size", flags->group_size, "W2 group size")->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Threads; 0 = one per hardware thread")->check(CLI::NonNegativeNumber);
  cmd->add_flag("!--no-scale-refit", flags->refit_scales, "GPTQ without the scale refit");
  cmd->add_flag("--pipeline", flags->pipeline,
                "Run the quantize command's layer-by-layer pipeline over the first --layers layers (time per layer, "
                "peak memory) instead of timing the stages apart");
  cmd->callback([flags, exit_code] { *exit_code = RunQuantizeBench(*flags); });
}

}  // namespace accllm::cli
