// A few threads for the CPU work a call needs before it can be queued (encoding a prompt, say),
// so that gRPC's own threads only ever do quick things. Tasks run in the order posted.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace accllm::server {

class CallExecutor {
 public:
  explicit CallExecutor(int threads);
  ~CallExecutor();  // Stop()
  CallExecutor(const CallExecutor&) = delete;
  CallExecutor& operator=(const CallExecutor&) = delete;

  // Runs `task` on one of the threads. False once stopping: the caller must do without.
  bool Post(std::function<void()> task);
  // Runs every task already posted, then joins the threads. Idempotent.
  void Stop();

 private:
  void Loop();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;  // guarded by mutex_
  bool stopping_ = false;                    // guarded by mutex_
  std::vector<std::thread> threads_;
};

}  // namespace accllm::server
