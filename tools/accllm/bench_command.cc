// accllm bench: decode and prefill speed of the CPU engine on synthesized models of real shapes,
// against the machine's memory read bandwidth measured in the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "runtime/common/half.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/eval/weight_variants.h"
#include "runtime/model/synthesize.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/int_list.h"

namespace accllm::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Resident set size from /proc/self/status, in bytes.
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// Best-of-`repeats` read bandwidth over a `bytes` buffer in anonymous memory, one slice per
// thread, read with the engine's own widest loads.
double ReadBandwidth(ThreadPool& pool, const CpuKernels& kernels, int64_t bytes, int repeats) {
  std::vector<uint8_t> buffer(static_cast<std::size_t>(bytes), 1);
  std::vector<uint64_t> sums(pool.threads(), 0);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    pool.ParallelFor(pool.threads(), [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        const int64_t slice = bytes / pool.threads() / 256 * 256;
        sums[part] = kernels.read_sum(buffer.data() + part * slice, slice);
      }
    });
    best = std::max(best, bytes / Seconds(start));
  }
  if (std::accumulate(sums.begin(), sums.end(), uint64_t{0}) == 42) std::printf(" ");  // keep the loads
  return best;
}

// Multiply-accumulates per token in the W2 layers (kept weights only, for 2:4).
int64_t LinearMacsPerToken(const PackedContents& p) {
  int64_t macs = 0;
  for (const auto& [id, m] : p.linears) macs += int64_t{m.shape.rows} * m.shape.stored_cols();
  return macs;
}

// Multiply-accumulates per second of the engine's own W2A8 kernel at 64 tokens on a dim x dim
// layer, its row tiles split across the threads as the engine splits a linear layer: the compute
// ceiling that batched decode and prefill run into once weights stop being the limit. (The model's
// width matters: a narrower layer pays the per-row-tile work for fewer columns, and read up to
// 1.8x low.)
double KernelMacRate(ThreadPool& pool, const CpuKernels& kernels, int dim, int group_size, bool sparse) {
  W2Matrix m({dim, dim, group_size, sparse});
  std::mt19937 rng(5);
  for (uint8_t& b : m.codes) b = static_cast<uint8_t>(rng());
  for (uint8_t& b : m.sparse_index) b = static_cast<uint8_t>(rng());
  std::fill(m.scales.begin(), m.scales.end(), FloatToFp16(0.01f));
  std::fill(m.zeros.begin(), m.zeros.end(), uint8_t{1});
  constexpr int kTokens = 64;
  A8Batch x(m.shape.cols_padded(), group_size, kTokens);
  std::vector<float> row(m.shape.cols_padded());
  std::normal_distribution<float> normal;
  for (int t = 0; t < kTokens; ++t) {
    for (float& v : row) v = normal(rng);
    x.Quantize(t, row);
  }
  std::vector<float> y(std::size_t{kTokens} * m.shape.rows_padded());
  const W2View view = m.view();
  const int64_t macs_per_pass = int64_t{m.shape.rows_padded()} * m.shape.stored_cols() * kTokens;
  // Rounds of ~1.3G MACs, the best of 15: with 3, one round of a shared machine's slow phases in
  // three made the ceiling swing by 1.7x between runs of one build; with 15 it moved by 8%.
  const int passes = static_cast<int>(std::max<int64_t>(2, (int64_t{1} << 30) * 5 / 4 / macs_per_pass));
  double best = 0;
  for (int r = 0; r < 15; ++r) {
    const auto start = Clock::now();
    for (int i = 0; i < passes; ++i) {
      pool.ParallelFor(m.shape.row_tiles(), [&](int64_t begin, int64_t end) {
        kernels.matmul_w2a8(view, x, static_cast<int>(begin), static_cast<int>(end), y.data(), m.shape.rows_padded());
      });
    }
    best = std::max(best, static_cast<double>(macs_per_pass) * passes / Seconds(start));
  }
  return best;
}

int64_t WeightBytesPerToken(const PackedContents& p, bool w8_classifier) {
  int64_t bytes = 0;
  for (const auto& [id, m] : p.linears) {
    bytes += static_cast<int64_t>(m.codes.size() + m.sparse_index.size() + m.zeros.size() + 2 * m.scales.size());
  }
  const int64_t classifier = int64_t{p.config.vocab_size} * p.config.dim;
  return bytes + (w8_classifier ? classifier + classifier / 128 * 8 : 2 * classifier);  // W8: + scale and sum per 128
}

struct BenchFlags;
int RunLongSequence(const BenchFlags& flags, const std::vector<int64_t>& points);

struct BenchFlags {
  std::string shapes = "llama2-7b,tinyllama-1.1b";
  std::string batches = "1,4,16,64";
  std::string prefills = "128,1024";
  int threads = 0;
  bool pin_threads = false;
  int decode_steps = 0;  // 0: chosen per shape
  bool sparse = false;
  int group_size = 128;
  bool long_run = true;
  std::string long_shape = "dim=256,ffn=688,layers=4,heads=8,vocab=32000,seq=2048";
  int long_window = 256;
  std::string long_points = "1024,8192,65536";
  bool profile = false;
  std::string classifier = "w8";
};

// One row of the --profile table: each stage's share of the steps' time.
std::string ProfileRow(const std::string& mode, const StepProfile& p) {
  const double total = p.total_seconds();
  std::string row = absl::StrFormat("| %s | %.2f |", mode, 1e3 * total / std::max<int64_t>(1, p.steps));
  for (double s : p.seconds) absl::StrAppendFormat(&row, " %.1f%% |", 100 * s / total);
  absl::StrAppendFormat(&row, " %.1f%% | %.0f |", 100 * p.loops.wait_seconds / total,
                        static_cast<double>(p.loops.loops) / std::max<int64_t>(1, p.steps));
  return row;
}

void PrintProfile(const std::vector<std::string>& rows) {
  if (rows.empty()) return;
  std::printf("\nWhere the steps' time goes (share of each mode's step time by stage; waiting: the engine thread at the "
              "ends of parallel loops, for chunks other threads still ran, part of the stages' shares)\n\n| mode | ms per step |");
  for (int i = 0; i < static_cast<int>(StepStage::kCount); ++i) std::printf(" %s |", StepStageName(static_cast<StepStage>(i)));
  std::printf(" waiting | parallel loops per step |\n|---|---:|");
  for (int i = 0; i < static_cast<int>(StepStage::kCount) + 2; ++i) std::printf("---:|");
  std::printf("\n");
  for (const std::string& row : rows) std::printf("%s\n", row.c_str());
}

// Decodes one sequence far past its window: time per token and resident memory must not grow.
int RunLongSequence(const BenchFlags& flags, const std::vector<int64_t>& points) {
  absl::StatusOr<LlamaConfig> config = ParseShape(flags.long_shape);
  if (!config.ok()) return ReportError(config.status());
  const PackedContents packed = SynthesizePacked(*config, 2, flags.group_size, flags.sparse);
  CpuEngineOptions options;
  options.threads = flags.threads;
  options.pin_threads = flags.pin_threads;
  options.lambda = {4, flags.long_window};
  absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(PackedWeights(packed), options);
  if (!engine.ok()) return ReportError(engine.status());
  CpuEngine& e = **engine;
  auto seq = e.NewSequence();
  std::vector<float> logits(config->vocab_size);
  SequenceKv* seqs[] = {seq.get()};
  std::printf("\n## One sequence decoded past its window (%s; Λ sinks 4, window %d, pages of %d; pool %d pages)\n\n",
              flags.long_shape.c_str(), flags.long_window, e.page_tokens(), e.page_pool().total());
  std::printf("| generated tokens | ms per token (last 512) | pages held | resident MB |\n|---:|---:|---:|---:|\n");
  int token = 1;
  const int64_t last = *std::max_element(points.begin(), points.end());
  const int kWindowSteps = 512;
  Clock::time_point window_start = Clock::now();
  for (int64_t i = 1; i <= last; ++i) {
    if (absl::Status s = e.Decode(seqs, {&token, 1}, logits); !s.ok()) return ReportError(s);
    token = 3 + static_cast<int>(i % 1000);
    if (i % kWindowSteps == 0 && std::find(points.begin(), points.end(), i + kWindowSteps) != points.end()) {
      window_start = Clock::now();
    }
    if (std::find(points.begin(), points.end(), i) != points.end()) {
      std::printf("| %lld | %.3f | %d | %.1f |\n", static_cast<long long>(i), 1e3 * Seconds(window_start) / kWindowSteps,
                  seq->pages_held(), ResidentBytes() / 1e6);
      std::fflush(stdout);
    }
  }
  return 0;
}

int RunBench(const BenchFlags& flags) {
  constexpr int64_t kMaxBatch = 1024, kMaxPrefill = 1 << 16;
  absl::StatusOr<std::vector<int64_t>> batch_list = ParsePositiveList(flags.batches, "batch size", kMaxBatch);
  if (!batch_list.ok()) return ReportError(batch_list.status());
  absl::StatusOr<std::vector<int64_t>> prefill_list =
      ParsePositiveList(flags.prefills, "prefill length", kMaxPrefill, /*zero_means_none=*/true);
  if (!prefill_list.ok()) return ReportError(prefill_list.status());
  const std::vector<int> batches(batch_list->begin(), batch_list->end()), prefills(prefill_list->begin(), prefill_list->end());
  // Checked before any run, so that a typo does not surface after minutes of benchmarks.
  absl::StatusOr<std::vector<int64_t>> long_points = ParsePositiveList(flags.long_points, "long-run point", int64_t{1} << 30);
  if (flags.long_run && !long_points.ok()) return ReportError(long_points.status());

  // Named shapes are separated by commas; shapes spelled out (dim=...,ffn=...) by semicolons.
  const char separator = absl::StrContains(flags.shapes, '=') ? ';' : ',';
  const std::vector<std::string> shape_names = absl::StrSplit(flags.shapes, separator, absl::SkipWhitespace());
  if (shape_names.empty() && !flags.long_run) return ReportError(absl::InvalidArgumentError("no shape given"));
  for (const std::string& shape_name : shape_names) {
    absl::StatusOr<LlamaConfig> config = ParseShape(shape_name);
    if (!config.ok()) return ReportError(config.status());
    const auto build_start = Clock::now();
    const PackedContents packed = SynthesizePacked(*config, 1, flags.group_size, flags.sparse);
    const double build_seconds = Seconds(build_start);
    const int64_t weight_bytes = WeightBytesPerToken(packed, flags.classifier == "w8");
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    const int context = 160;
    CpuEngineOptions options;
    options.threads = flags.threads;
    options.pin_threads = flags.pin_threads;
    options.w8_classifier = flags.classifier == "w8";
    options.max_step_tokens = std::max(max_batch, 256);
    options.kv_pages = max_batch * ((context + options.page_tokens - 1) / options.page_tokens + 1) + 64;
    const int64_t rss_before = ResidentBytes();
    absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Create(PackedWeights(packed), options);
    if (!engine.ok()) return ReportError(engine.status());
    CpuEngine& e = **engine;
    const int64_t rss_after = ResidentBytes();

    // The host is shared and its bandwidth swings: measure it right before and right after the
    // batch-1 decode, and hold batch 1 against the mean of the two.
    ThreadPool bandwidth_pool(e.threads(), flags.pin_threads);
    const auto measure_bandwidth = [&] { return ReadBandwidth(bandwidth_pool, e.kernels(), int64_t{1} << 30, 3); };
    double bandwidth = measure_bandwidth();
    std::printf("\n## %s (%s%s, group %d): %.2f GB of weights read per decode step, KV pool %.2f GB\n",
                shape_name.c_str(), flags.sparse ? "W2 2:4" : "W2 dense", ", A8, KV4", flags.group_size,
                weight_bytes / 1e9, e.kv_bytes() / 1e9);
    std::printf("engine %s; synthesized in %.1f s; read bandwidth (same run, %d threads, best of 5) %.1f GB/s; "
                "bandwidth roofline %.1f tokens/s at batch 1\n",
                e.name().c_str(), build_seconds, e.threads(), bandwidth / 1e9, bandwidth / weight_bytes);
    const double mac_rate = KernelMacRate(bandwidth_pool, e.kernels(), config->dim, flags.group_size, flags.sparse);
    const double compute_roofline = mac_rate / LinearMacsPerToken(packed);
    std::printf("W2A8 kernel throughput (same run, %d threads, 64 tokens, a %d x %d layer split across the threads) "
                "%.0f GMAC/s; compute ceiling %.1f tokens/s for the W2 layers at any batch\n",
                e.threads(), config->dim, config->dim, mac_rate / 1e9, compute_roofline);
    std::printf("resident: %.2f GB with weights and KV pool (packed weights %.2f GB + KV %.2f GB = %.2f GB; "
                "engine scratch and pool added %.2f GB)\n\n",
                rss_after / 1e9, packed.embedding.size() * 2e-9 + weight_bytes / 1e9, e.kv_bytes() / 1e9,
                packed.embedding.size() * 2e-9 + (weight_bytes + e.kv_bytes()) / 1e9, (rss_after - rss_before) / 1e9);

    std::printf("| mode | tokens | seconds | tokens/s | vs batch 1 | weight GB/s | of roofline | of compute ceiling |\n");
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    const int vocab = config->vocab_size;
    double batch1 = 0;
    std::vector<std::string> profile_rows;
    for (int batch : batches) {
      std::vector<std::unique_ptr<SequenceKv>> seqs;
      std::vector<SequenceKv*> raw;
      std::vector<float> logits(static_cast<std::size_t>(batch) * vocab);
      for (int b = 0; b < batch; ++b) {
        seqs.push_back(e.NewSequence());
        raw.push_back(seqs.back().get());
        std::vector<int> prompt(16);
        std::iota(prompt.begin(), prompt.end(), 100 + b);
        if (absl::Status s = e.Prefill(*seqs.back(), prompt, logits); !s.ok()) return ReportError(s);
      }
      std::vector<int> tokens(batch, 7);
      if (absl::Status s = e.Decode(raw, tokens, logits); !s.ok()) return ReportError(s);  // warm-up
      const int steps = flags.decode_steps > 0 ? flags.decode_steps : std::max(3, 24 / batch);
      StepProfile profile;
      if (flags.profile) e.set_profile(&profile);
      const auto start = Clock::now();
      for (int i = 0; i < steps; ++i) {
        if (absl::Status s = e.Decode(raw, tokens, logits); !s.ok()) return ReportError(s);
      }
      const double seconds = Seconds(start);
      e.set_profile(nullptr);
      if (flags.profile) profile_rows.push_back(ProfileRow(absl::StrCat("decode batch ", batch), profile));
      if (batch == 1) {
        const double after = measure_bandwidth();
        std::printf("| (read bandwidth before / after batch 1: %.1f / %.1f GB/s; roofline %.1f tokens/s) ||||||||\n",
                    bandwidth / 1e9, after / 1e9, (bandwidth + after) / 2 / weight_bytes);
        bandwidth = (bandwidth + after) / 2;
        // The host's bandwidth moves within seconds, so also pair each decode step with a probe
        // taken right before it and take the median of the per-step shares of the roofline.
        std::vector<double> shares;
        for (int i = 0; i < steps; ++i) {
          const double probe = ReadBandwidth(bandwidth_pool, e.kernels(), int64_t{256} << 20, 1);
          const auto step_start = Clock::now();
          if (absl::Status s = e.Decode(raw, tokens, logits); !s.ok()) return ReportError(s);
          shares.push_back(weight_bytes / Seconds(step_start) / probe);
        }
        std::sort(shares.begin(), shares.end());
        std::printf("| (%d decode steps each right after a 256 MB probe: median %.0f%% of the probe's roofline, "
                    "range %.0f-%.0f%%) ||||||||\n",
                    steps, 100 * shares[shares.size() / 2], 100 * shares.front(), 100 * shares.back());
      }
      const double tps = steps * batch / seconds;
      if (batch == 1) batch1 = tps;
      const double gbps = steps * weight_bytes / seconds;
      std::printf("| decode batch %d | %d | %.2f | %.1f | %.2fx | %.1f | %.0f%% | %.0f%% |\n", batch, steps * batch, seconds,
                  tps, batch1 > 0 ? tps / batch1 : 0.0, gbps / 1e9, 100.0 * gbps / bandwidth, 100.0 * tps / compute_roofline);
      std::fflush(stdout);
    }
    for (int length : prefills) {
      auto seq = e.NewSequence();
      std::vector<int> prompt(length);
      std::iota(prompt.begin(), prompt.end(), 3);
      std::vector<float> logits(vocab);
      StepProfile profile;
      if (flags.profile) e.set_profile(&profile);
      const auto start = Clock::now();
      for (int begin = 0; begin < length; begin += e.max_step_tokens()) {
        const int n = std::min(e.max_step_tokens(), length - begin);
        if (absl::Status s = e.Prefill(*seq, std::span(prompt).subspan(begin, n), logits); !s.ok()) return ReportError(s);
      }
      const double seconds = Seconds(start);
      e.set_profile(nullptr);
      if (flags.profile) profile_rows.push_back(ProfileRow(absl::StrCat("prefill ", length), profile));
      std::printf("| prefill %d | %d | %.2f | %.1f | | | | %.0f%% |\n", length, length, seconds, length / seconds,
                  100.0 * length / seconds / compute_roofline);
      std::fflush(stdout);
    }
    PrintProfile(profile_rows);
  }
  if (flags.long_run) return RunLongSequence(flags, *long_points);
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "Decode/prefill speed on synthesized models of real shapes, with the bandwidth roofline");
  cmd->add_option("--shapes", flags->shapes,
                  "Shapes (see synth --shape): names separated by commas, or specs (dim=...,ffn=...) by semicolons")
      ->capture_default_str();
  cmd->add_option("--batches", flags->batches, "Decode batch sizes")->capture_default_str();
  cmd->add_option("--prefills", flags->prefills, "Prefill lengths (0: none)")->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Worker threads; 0 = one per hardware thread");
  cmd->add_flag("--pin-threads", flags->pin_threads, "Pin each thread to its own CPU, one per physical core first");
  cmd->add_option("--decode-steps", flags->decode_steps, "Decode steps to time per batch size; 0 = automatic");
  cmd->add_option("--group-size", flags->group_size, "W2 group size")->capture_default_str();
  cmd->add_flag("--sparse", flags->sparse, "Use 2:4 sparse W2 layers");
  cmd->add_option("--long-shape", flags->long_shape, "Shape for the long-sequence run")->capture_default_str();
  cmd->add_option("--long-window", flags->long_window, "Λ window for the long-sequence run")->capture_default_str();
  cmd->add_option("--long-points", flags->long_points, "Generated-token counts to report in the long run")->capture_default_str();
  cmd->add_flag("!--no-long", flags->long_run, "Skip the long-sequence run");
  cmd->add_flag("--profile", flags->profile, "Also print where the steps' time goes, stage by stage");
  cmd->add_option("--classifier", flags->classifier, "Classifier precision: w8 (as served by default) or f16")
      ->check(CLI::IsMember({"f16", "w8"}))->capture_default_str();
  cmd->callback([flags, exit_code] { *exit_code = RunBench(*flags); });
}

}  // namespace accllm::cli
