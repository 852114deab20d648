// The CPU's peak int8 rates per core, as counters in MACs per second: the AMX tile unit
// (PeakMacs/amx-tile) and AVX-512 VNNI (PeakMacs/avx512-vnni). The W2A8 benchmarks' MAC/s read
// against them say how far a kernel is from its hardware. One thread: run one copy per core
// (taskset) to see what each core keeps when all of them are busy.
#include "benchmark/benchmark.h"
#include "bench/peak_loops.h"
#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

constexpr int64_t kRounds = 1 << 16;

void BM_AmxTilePeak(benchmark::State& state) {
  if (!KernelsFor(CpuPath::kAmx).ok()) {  // also asks Linux for the tile state
    state.SkipWithError("no AMX on this CPU");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(AmxTilePeakLoop(kRounds));
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * kRounds * 4 * 16 * 16 * 64,
                                               benchmark::Counter::kIsRate);
}

void BM_VnniPeak(benchmark::State& state) {
  if (!KernelsFor(CpuPath::kAvx512).ok()) {
    state.SkipWithError("no AVX-512 VNNI on this CPU");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(VnniPeakLoop(kRounds));
  state.counters["MAC/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kRounds * 12 * 64, benchmark::Counter::kIsRate);
}

}  // namespace

void RegisterPeakBenchmarks() {
  benchmark::RegisterBenchmark("PeakMacs/amx-tile", BM_AmxTilePeak)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("PeakMacs/avx512-vnni", BM_VnniPeak)->Unit(benchmark::kMicrosecond);
}

}  // namespace accllm
