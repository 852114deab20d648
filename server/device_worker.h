// One device: its Backend, the Scheduler that batches requests onto it, and the thread that
// steps the scheduler. Submissions wake the thread; an idle worker sleeps.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "runtime/engine/backend.h"
#include "runtime/serving/scheduler.h"

namespace accllm::server {

class DeviceWorker {
 public:
  // `on_failure` (may be empty) gets the requests of a failed device (see Scheduler).
  DeviceWorker(std::unique_ptr<Backend> backend, const Tokenizer& tokenizer, const SchedulerOptions& options,
               FailureHandler on_failure = {});
  ~DeviceWorker();  // stops the thread; requests still running are cancelled first
  DeviceWorker(const DeviceWorker&) = delete;
  DeviceWorker& operator=(const DeviceWorker&) = delete;

  absl::StatusOr<uint64_t> Submit(ScheduledRequest request);
  // Null when taken; the request back when the device has failed (see Scheduler::Adopt).
  std::unique_ptr<InFlightRequest> Adopt(std::unique_ptr<InFlightRequest> request);
  // Makes the thread look at its requests now (after a cancel flag was set).
  void Wake();
  bool healthy() const { return !scheduler_.failed(); }
  // Cancels everything waiting or running and returns once each has had its last event.
  void CancelAllAndWait();

  Backend& backend() { return *backend_; }
  const Scheduler& scheduler() const { return scheduler_; }
  Scheduler& scheduler() { return scheduler_; }

 private:
  void Loop();

  std::unique_ptr<Backend> backend_;
  Scheduler scheduler_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool pending_ = false;  // guarded by mutex_
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace accllm::server
