// Google Benchmark for the W2 x A8 kernels on Llama-2-7B layer shapes, every available path.
// Reports weight bytes read per second (codes + scales + zeros) and, for batches, tokens/s; also
// the A8 quantization of one token's activations (A8Quantize/<path>), values per second.
// For batches it also counts MAC/s (rows x cols x tokens; for 2:4 layers, of the dense product),
// to read against the CPU's peak (PeakMacs/*, peak_bench.cc). (And the attention of a prefill
// step, attention_bench.cc; the thread pool's cost per loop, thread_pool_bench.cc.)
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "runtime/cpu/kernels.h"
#include "runtime/quant/a8.h"
#include "runtime/quant/w2.h"

namespace accllm {

void RegisterAttentionBenchmarks(const std::vector<std::pair<CpuPath, std::string>>& paths);
void RegisterThreadPoolBenchmarks();
void RegisterPeakBenchmarks();

namespace {

const W2Matrix& Matrix(int rows, int cols, bool sparse) {
  static std::map<std::tuple<int, int, bool>, std::unique_ptr<W2Matrix>> cache;
  auto& slot = cache[{rows, cols, sparse}];
  if (!slot) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> w(static_cast<std::size_t>(rows) * cols);
    for (float& v : w) v = normal(rng);
    std::vector<uint8_t> keep;
    if (sparse) {
      keep.assign(w.size(), 0);
      for (std::size_t i = 0; i < keep.size(); i += 4) keep[i + rng() % 2] = keep[i + 2 + rng() % 2] = 1;
    }
    slot = std::make_unique<W2Matrix>(*QuantizeW2(w, {rows, cols, 128, sparse}, keep));
  }
  return *slot;
}

void BM_MatMulW2A8(benchmark::State& state, CpuPath path, int rows, int cols, bool sparse) {
  const auto kernels = KernelsFor(path);
  if (!kernels.ok()) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  const int tokens = static_cast<int>(state.range(0));
  const W2Matrix& m = Matrix(rows, cols, sparse);
  A8Batch x(m.shape.cols_padded(), 128, tokens);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(cols);
  for (int t = 0; t < tokens; ++t) {
    for (float& e : v) e = normal(rng);
    x.Quantize(t, v);
  }
  std::vector<float> y(static_cast<std::size_t>(rows) * tokens);
  for (auto _ : state) {
    (*kernels)->matmul_w2a8(m.view(), x, 0, m.shape.row_tiles(), y.data(), rows);
    benchmark::DoNotOptimize(y.data());
  }
  const int64_t bytes = m.shape.code_bytes() * (sparse ? 2 : 1) + m.shape.group_params() * 3;
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * tokens, benchmark::Counter::kIsRate);
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * tokens * rows * cols,
                                               benchmark::Counter::kIsRate);
}

// One token's activations into A8 codes, at the widths a Llama-2-7B layer quantizes (the inputs
// of the attention and FFN projections, and of the down projection). Values per second.
void BM_A8Quantize(benchmark::State& state, CpuPath path) {
  const auto kernels = KernelsFor(path);
  if (!kernels.ok()) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  const int cols = static_cast<int>(state.range(0));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(cols);
  for (float& e : v) e = normal(rng);
  A8Batch x(cols, 128, 1);
  for (auto _ : state) {
    x.Quantize(0, v, (*kernels)->a8_quantize);
    benchmark::DoNotOptimize(x.codes(0));
  }
  state.counters["values/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * cols, benchmark::Counter::kIsRate);
}

void Register() {
  struct Shape {
    const char* name;
    int rows, cols;
  };
  const std::vector<std::pair<CpuPath, std::string>> paths = {{CpuPath::kScalar, "scalar"},
                                                              {CpuPath::kAvx2, "avx2"},
                                                              {CpuPath::kAvx2Vnni, "avx2-vnni"},
                                                              {CpuPath::kAvx512, "avx512"},
                                                              {CpuPath::kAmx, "amx"}};
  for (const Shape& s : {Shape{"wq_4096x4096", 4096, 4096}, Shape{"w1_11008x4096", 11008, 4096},
                         Shape{"w2_4096x11008", 4096, 11008}}) {
    for (bool sparse : {false, true}) {
      for (const auto& [p, path] : paths) {
        auto* b = benchmark::RegisterBenchmark(
            (std::string("W2A8/") + s.name + (sparse ? "/sparse24/" : "/dense/") + path).c_str(),
            [=](benchmark::State& st) { BM_MatMulW2A8(st, p, s.rows, s.cols, sparse); });
        if (p == CpuPath::kScalar) {
          b->Arg(1);
        } else {
          b->Arg(1)->Arg(4)->Arg(16)->Arg(64)->Arg(128);
        }
        b->Unit(benchmark::kMicrosecond);
      }
    }
  }
  for (const auto& [p, path] : paths) {
    benchmark::RegisterBenchmark(("A8Quantize/" + path).c_str(), [=](benchmark::State& st) { BM_A8Quantize(st, p); })
        ->Arg(4096)
        ->Arg(11008);
  }
  RegisterAttentionBenchmarks(paths);
  RegisterThreadPoolBenchmarks();
  RegisterPeakBenchmarks();
}

}  // namespace
}  // namespace accllm

int main(int argc, char** argv) {
  accllm::Register();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
