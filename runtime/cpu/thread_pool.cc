#include "runtime/cpu/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "runtime/cpu/cpu_placement.h"

namespace accllm {

namespace {

constexpr int kSpinIterations = 4000;
// Measured on a 16-core Xeon (Llama-2-7B, 16 threads): 4 chunks per thread left the engine thread
// waiting 17-22% of a batch-16 step for the last chunks; 16 cut that to 6-9% (+13% tokens/s).
constexpr int64_t kChunksPerThread = 16;

uint64_t PackShare(uint32_t generation, uint32_t next, uint32_t end) {
  return uint64_t{generation} << 32 | uint64_t{next} << 16 | end;
}
uint32_t GenerationOf(uint64_t state) { return static_cast<uint32_t>(state >> 32); }
uint32_t NextOf(uint64_t state) { return static_cast<uint32_t>(state >> 16) & 0xffff; }
uint32_t EndOf(uint64_t state) { return static_cast<uint32_t>(state) & 0xffff; }

}  // namespace

ThreadPool::ThreadPool(int threads, bool pin) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (pin) cpus_ = PlacementOrder();
  // Chunk indices are 16-bit in a share's state.
  threads = std::min(threads, static_cast<int>(0xffff / kChunksPerThread));
  shares_ = std::vector<Share>(static_cast<std::size_t>(threads));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

bool ThreadPool::Claim(Share& share, uint32_t generation, int64_t* chunk) {
  uint64_t state = share.state.load(std::memory_order_acquire);
  while (GenerationOf(state) == generation && NextOf(state) < EndOf(state)) {
    const uint64_t claimed = PackShare(generation, NextOf(state) + 1, EndOf(state));
    if (share.state.compare_exchange_weak(state, claimed, std::memory_order_acq_rel, std::memory_order_acquire)) {
      *chunk = NextOf(state);
      return true;
    }
  }
  return false;
}

void ThreadPool::RunChunks(int index, uint32_t generation) {
  const int parts = threads();
  for (int k = 0; k < parts; ++k) {  // its own share first, then the others' from the next one on
    Share& share = shares_[static_cast<std::size_t>((index + k) % parts)];
    // The chunks of its own share are counted done together when the share runs out, stolen ones
    // (which can be a loop's last) one by one. On a 16-thread Xeon a count bumped after every
    // chunk made a loop of 256 trivial chunks take 18 us (the count's cache line passed from core
    // to core for each); this way it takes 5 (`accllm_kernels_bench --benchmark_filter=ThreadPool`).
    int64_t own_done = 0;
    for (int64_t chunk; Claim(share, generation, &chunk);) {
      // Claimed, so the loop is still in progress: job_, job_size_ and chunks_ are its own.
      const int64_t begin = job_size_ * chunk / chunks_;
      const int64_t end = job_size_ * (chunk + 1) / chunks_;
      (*job_)(begin, end);
      if (k == 0) {
        ++own_done;
      } else {
        chunks_done_.fetch_add(1, std::memory_order_acq_rel);
      }
    }
    if (own_done > 0) chunks_done_.fetch_add(own_done, std::memory_order_acq_rel);
  }
}

void ThreadPool::PinCallerIfNew() {
  if (cpus_.empty() || std::this_thread::get_id() == pinned_caller_) return;
  pinned_caller_ = std::this_thread::get_id();
  (void)PinCurrentThread(cpus_[0]);  // a hint: a thread that cannot be pinned still runs
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  PinCallerIfNew();
  if (workers_.empty() || n == 1) {
    fn(0, n);
    return;
  }
  const int parts = threads();
  const int64_t chunks = std::min<int64_t>(n, parts * kChunksPerThread);
  job_ = &fn;
  job_size_ = n;
  chunks_ = chunks;
  chunks_done_.store(0, std::memory_order_relaxed);
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  for (int i = 0; i < parts; ++i) {
    shares_[static_cast<std::size_t>(i)].state.store(
        PackShare(generation, static_cast<uint32_t>(chunks * i / parts), static_cast<uint32_t>(chunks * (i + 1) / parts)),
        std::memory_order_relaxed);
  }
  {
    // Published under the lock so that a worker between its check and its wait cannot miss it.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.store(generation, std::memory_order_release);
  }
  wake_.notify_all();
  RunChunks(0, generation);
  const auto wait_start = stats_ != nullptr ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  // Every chunk is claimed; wait for those still running elsewhere. Spin briefly, then yield: on
  // an oversubscribed machine a pure spin would steal the core the last one needs.
  for (int spins = 0; chunks_done_.load(std::memory_order_acquire) != chunks; ++spins) {
    if (spins < kSpinIterations) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
  if (stats_ != nullptr) {
    ++stats_->loops;
    stats_->wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
  }
}

void ThreadPool::WorkerLoop(int index) {
  if (!cpus_.empty()) (void)PinCurrentThread(cpus_[static_cast<std::size_t>(index) % cpus_.size()]);
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      _mm_pause();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    RunChunks(index, seen);
  }
}

}  // namespace accllm
