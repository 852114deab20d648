// A persistent pool of worker threads for data-parallel loops. The calling thread takes part,
// so a pool of N threads starts N - 1 workers. Workers spin briefly before sleeping: a decode
// step issues hundreds of short loops and a futex wake-up per loop would dominate them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace accllm {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads <= 0: one per hardware thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Calls fn(begin, end) over [0, n) split into contiguous chunks, one per thread, and returns
  // when all are done. note: call from one thread at a time; fn must not call ParallelFor.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  void WorkerLoop(int index);
  void RunShare(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace accllm
