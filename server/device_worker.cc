#include "server/device_worker.h"

#include <chrono>

namespace accllm::server {

DeviceWorker::DeviceWorker(std::unique_ptr<Backend> backend, const Tokenizer& tokenizer, const SchedulerOptions& options,
                           FailureHandler on_failure)
    : backend_(std::move(backend)), scheduler_(*backend_, tokenizer, options) {
  scheduler_.SetFailureHandler(std::move(on_failure));
  thread_ = std::thread([this] { Loop(); });
}

DeviceWorker::~DeviceWorker() {
  scheduler_.CancelAll();
  stop_.store(true);
  Wake();
  thread_.join();
}

absl::StatusOr<uint64_t> DeviceWorker::Submit(ScheduledRequest request) {
  absl::StatusOr<uint64_t> id = scheduler_.Submit(std::move(request));
  if (id.ok()) Wake();
  return id;
}

std::unique_ptr<InFlightRequest> DeviceWorker::Adopt(std::unique_ptr<InFlightRequest> request) {
  std::unique_ptr<InFlightRequest> refused = scheduler_.Adopt(std::move(request));
  if (refused == nullptr) Wake();
  return refused;
}

void DeviceWorker::Wake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ = true;
  }
  wake_.notify_one();
}

void DeviceWorker::CancelAllAndWait() {
  scheduler_.CancelAll();
  Wake();
  for (Scheduler::Load load = scheduler_.load(); load.running > 0 || load.waiting > 0; load = scheduler_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void DeviceWorker::Loop() {
  bool busy = false;
  while (!stop_.load()) {
    if (!busy) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return pending_; });
      pending_ = false;
    }
    busy = scheduler_.Step();
  }
  // Shutting down: whatever still runs ends as cancelled, so every stream gets its last message.
  for (int i = 0; i < 1000 && busy; ++i) busy = scheduler_.Step();
}

}  // namespace accllm::server
