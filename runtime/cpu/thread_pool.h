// A persistent pool of worker threads for data-parallel loops. The calling thread takes part,
// so a pool of N threads starts N - 1 workers. Workers spin briefly before sleeping: a decode
// step issues hundreds of short loops and a futex wake-up per loop would dominate them.
//
// A loop is cut into several chunks per thread. Each thread runs the chunks of its own share first
// (the same rows every step, so they stay in its cache), then takes chunks no other thread has
// started. On a machine with more runnable threads than cores (CI running tests side by side, a
// server beside other work), a worker the kernel has not scheduled yet no longer holds up the
// loop: the threads that are running do its share.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace accllm {

// What a pool's loops cost its calling thread (accllm bench --profile).
struct LoopStats {
  int64_t loops = 0;
  double wait_seconds = 0;  // after running its chunks, waiting for those still running elsewhere
};

class ThreadPool {
 public:
  // threads <= 0: one per hardware thread. With `pin`, thread i runs on the i-th CPU of
  // PlacementOrder() (cpu_placement.h): the workers from their start, a calling thread from its
  // first loop.
  explicit ThreadPool(int threads, bool pin = false);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Calls fn(begin, end) on disjoint ranges that cover [0, n) and returns when all are done. Which
  // thread runs which range varies from call to call. note: call from one thread at a time; fn
  // must not call ParallelFor.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  // Counts the loops called from now on into *stats (null: stop counting).
  void set_loop_stats(LoopStats* stats) { stats_ = stats; }

 private:
  // The chunks of one thread's share not yet started: next, end and the loop's generation in one
  // word, so that a claim is one compare-and-swap and a thread that wakes up late for a loop that
  // has ended finds nothing to claim.
  struct alignas(64) Share {
    std::atomic<uint64_t> state{0};
  };

  void WorkerLoop(int index);
  void PinCallerIfNew();
  void RunChunks(int index, uint32_t generation);
  bool Claim(Share& share, uint32_t generation, int64_t* chunk);

  std::vector<std::thread> workers_;
  std::vector<Share> shares_;  // one per thread
  std::mutex mutex_;
  std::condition_variable wake_;
  // The loop in progress; written before its generation is published, read only by a thread that
  // has claimed one of its chunks (so the loop cannot have ended).
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  int64_t chunks_ = 0;
  alignas(64) std::atomic<int64_t> chunks_done_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  LoopStats* stats_ = nullptr;
  std::vector<int> cpus_;  // with pinning: thread i's CPU is cpus_[i % size]
  std::thread::id pinned_caller_;
};

}  // namespace accllm
