// Google Benchmark for the thread pool's cost per parallel loop (the CPU engine runs ~325 a
// decode step of Llama-2-7B): loops of n trivial items on T threads, wall time per loop.
#include <atomic>

#include "benchmark/benchmark.h"
#include "runtime/cpu/thread_pool.h"

namespace accllm {

namespace {

void BM_ParallelForTrivial(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t n = state.range(1);
  std::atomic<int64_t> sink{0};
  for (auto _ : state) {
    pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
      int64_t sum = 0;
      for (int64_t i = begin; i < end; ++i) sum += i;
      if (sum < 0) sink.fetch_add(sum, std::memory_order_relaxed);
    });
  }
  benchmark::DoNotOptimize(sink.load());
}

}  // namespace

void RegisterThreadPoolBenchmarks() {
  benchmark::RegisterBenchmark("ThreadPool/loop", BM_ParallelForTrivial)
      ->ArgNames({"threads", "items"})
      ->ArgsProduct({{2, 4, 8, 16}, {16, 512, 4096}})
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace accllm
