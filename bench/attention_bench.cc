// Google Benchmark for the CPU attention of one Llama-2-7B layer (32 heads of 128) in a prefill
// step of one sequence, one thread: its items one at a time (the KV4 kernels on the codes) against
// its blocks of shared keys (cpu_attention.h). Reports query-key pairs per second. Also the KV4
// quantization of the vectors a step writes (Kv4Write/<path>) and the head rotation every query,
// key, value and output goes through (Hadamard/<path>), head vectors per second.
#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "runtime/cpu/cpu_attention.h"
#include "runtime/model/llama_config.h"

namespace accllm {

namespace {

constexpr int kHeads = 32, kHeadSize = 128, kPageTokens = 16;

struct PrefillLayer {
  std::unique_ptr<KvStorage> kv;
  AttentionBatch batch;
  int64_t pairs = 0;
};

// `tokens` tokens of one sequence from position 0, each seeing every position up to its own.
const PrefillLayer& Layer(int tokens) {
  static std::map<int, std::unique_ptr<PrefillLayer>> cache;
  auto& slot = cache[tokens];
  if (slot) return *slot;
  slot = std::make_unique<PrefillLayer>();
  LlamaConfig config;
  config.dim = kHeads * kHeadSize;
  config.hidden_dim = 8;
  config.n_layers = 1;
  config.n_heads = config.n_kv_heads = kHeads;
  config.vocab_size = 8;
  config.max_seq_len = tokens;
  const int pages = (tokens + kPageTokens - 1) / kPageTokens;
  slot->kv = std::make_unique<KvStorage>(config, pages, kPageTokens, KvPrecision::kKv4);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(kHeadSize), v(kHeadSize);
  for (int p = 0; p < tokens; ++p) {
    for (int h = 0; h < kHeads; ++h) {
      for (int d = 0; d < kHeadSize; ++d) k[d] = normal(rng), v[d] = normal(rng);
      slot->kv->WriteHead(0, p / kPageTokens, p % kPageTokens, h, k.data(), v.data());
    }
  }
  AttentionBatch& b = slot->batch;
  b.head_size = kHeadSize;
  b.items = tokens * kHeads;
  b.item_runs = {0};
  for (int t = 0; t < tokens; ++t) {
    for (int h = 0; h < kHeads; ++h) {
      for (int p = 0; p <= t; p += kPageTokens) {
        b.run_start.push_back(static_cast<int32_t>(slot->kv->VectorIndex(0, p / kPageTokens, h, 0)));
        b.run_count.push_back(std::min(kPageTokens, t + 1 - p));
      }
      b.item_runs.push_back(static_cast<int32_t>(b.run_start.size()));
      b.item_sink_runs.push_back(0);
      for (int d = 0; d < 2 * kHeadSize; ++d) (d < kHeadSize ? b.q : b.q_sink).push_back(normal(rng));
      slot->pairs += t + 1;
    }
  }
  return *slot;
}

void BM_PrefillAttention(benchmark::State& state, CpuPath path, bool blocks) {
  const auto kernels = KernelsFor(path);
  if (!kernels.ok()) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  const PrefillLayer& layer = Layer(static_cast<int>(state.range(0)));
  ThreadPool pool(1);
  std::vector<float> out(static_cast<std::size_t>(layer.batch.items) * kHeadSize);
  for (auto _ : state) {
    const SharedKeyPlan plan = PlanSharedKeys(layer.batch, 64);  // the engine plans once per step
    RunAttentionOnCpu(layer.batch, *layer.kv, **kernels, pool, out.data(), blocks ? &plan : nullptr);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["pairs/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * layer.pairs, benchmark::Counter::kIsRate);
}

void BM_Kv4Write(benchmark::State& state, CpuPath path) {
  const auto kernels = KernelsFor(path);
  if (!kernels.ok()) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  constexpr int kVectors = 256;  // a batch-16 decode step's keys of 16 heads, in cache
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(kVectors) * kHeadSize);
  for (float& v : x) v = normal(rng);
  std::vector<uint8_t> codes(x.size() / 2);
  std::vector<Kv4Params> params(kVectors);
  for (auto _ : state) {
    for (int i = 0; i < kVectors; ++i) {
      params[i] = (*kernels)->kv4_quantize({&x[static_cast<std::size_t>(i) * kHeadSize], kHeadSize},
                                           &codes[static_cast<std::size_t>(i) * kHeadSize / 2]);
    }
    benchmark::DoNotOptimize(codes.data());
    benchmark::DoNotOptimize(params.data());
  }
  state.counters["vectors/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kVectors, benchmark::Counter::kIsRate);
}

void BM_Hadamard(benchmark::State& state, CpuPath path) {
  const auto kernels = KernelsFor(path);
  if (!kernels.ok()) {
    state.SkipWithError("path not supported on this CPU");
    return;
  }
  constexpr int kVectors = 256;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(kVectors) * kHeadSize);
  for (float& v : x) v = normal(rng);
  for (auto _ : state) {
    for (int i = 0; i < kVectors; ++i) (*kernels)->hadamard(&x[static_cast<std::size_t>(i) * kHeadSize], kHeadSize);
    benchmark::DoNotOptimize(x.data());
  }
  state.counters["vectors/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kVectors, benchmark::Counter::kIsRate);
}

}  // namespace

void RegisterAttentionBenchmarks(const std::vector<std::pair<CpuPath, std::string>>& paths) {
  for (const auto& [path, name] : paths) {
    benchmark::RegisterBenchmark(("Kv4Write/" + name).c_str(), [=](benchmark::State& st) { BM_Kv4Write(st, path); });
    benchmark::RegisterBenchmark(("Hadamard/" + name).c_str(), [=](benchmark::State& st) { BM_Hadamard(st, path); });
    if (path == CpuPath::kScalar) continue;
    for (bool blocks : {false, true}) {
      benchmark::RegisterBenchmark(("Attention/prefill/" + name + (blocks ? "/blocks" : "/items")).c_str(),
                                   [=](benchmark::State& st) { BM_PrefillAttention(st, path, blocks); })
          ->Arg(128)
          ->Arg(512)
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace accllm
