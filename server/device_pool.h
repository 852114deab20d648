// Every device the server runs on, each a DeviceWorker behind the engine's Backend, and the
// placement policy that picks one for each new request:
//   1. the least-loaded accelerator with room for the request now;
//   2. else (policy kWhenFull) the least-loaded fallback (CPU) device with room;
//   3. else the device with the shortest queue, accelerators first, while its queue has space;
//   4. else refuse (RESOURCE_EXHAUSTED).
// "Room" is exact: a free batch slot and the request's worst-case KV pages (see Scheduler).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/backend_factory.h"
#include "runtime/serving/scheduler.h"
#include "server/device_worker.h"

namespace accllm::server {

// One entry of --devices: a kind and how many of it, e.g. "cpu" or "cpu:2". For hardware kinds
// ("fpga") a bare kind means every card found, and none found is not an error.
struct DeviceSpec {
  std::string kind;
  int count = 1;
  bool count_given = false;
};
absl::StatusOr<std::vector<DeviceSpec>> ParseDeviceList(const std::string& list);

enum class FallbackPolicy {
  kWhenFull,  // fallback devices take requests only when no accelerator has room
  kNever,     // fallback devices are unused while an accelerator exists
  kBalance,   // every device is equal: least-loaded wins
};
absl::StatusOr<FallbackPolicy> ParseFallbackPolicy(const std::string& name);
const char* FallbackPolicyName(FallbackPolicy policy);

struct DevicePoolOptions {
  std::string devices = "fpga,cpu";
  FallbackPolicy fallback = FallbackPolicy::kWhenFull;
  // Told (on the failed device's thread) when a device fails: what happened to its streams, and
  // whether any device is still healthy.
  std::function<void(const std::string& message, bool any_healthy)> on_device_failure;
};

class DevicePool {
 public:
  struct Device {
    std::string name;   // e.g. "cpu:0"
    bool fallback;      // a CPU device
    std::unique_ptr<DeviceWorker> worker;
  };
  static absl::StatusOr<std::unique_ptr<DevicePool>> Create(const DevicePoolOptions& options,
                                                            const BackendOptions& backend,
                                                            const SchedulerOptions& scheduler, const AnyModel& model,
                                                            const Tokenizer& tokenizer);
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // Places the request (see above) and returns the name of the device it went to. Cancel it
  // with its ScheduledRequest::cancel flag and WakeAll: it may move to another device later.
  absl::StatusOr<std::string> Submit(ScheduledRequest request);
  // Cancels everything on every device and returns once each request has had its last event.
  void CancelAllAndWait();
  // Wakes every device (a request's cancel flag was set).
  void WakeAll();
  bool Idle() const;

  const std::vector<Device>& devices() const { return devices_; }
  // What Create noticed and skipped, e.g. "fpga: no FPGA cards found" (the server logs these).
  const std::vector<std::string>& notes() const { return notes_; }
  // Devices that could not be made (model too wide, no memory for the KV pool, ...): each says
  // which and why. The server logs them as errors and serves on the rest.
  const std::vector<std::string>& left_out() const { return left_out_; }
  const Backend& first_backend() const { return devices_.front().worker->backend(); }
  FallbackPolicy policy() const { return options_.fallback; }
  bool has_accelerators() const { return has_accelerators_; }
  int64_t fallbacks() const { return fallbacks_.load(); }
  int64_t device_failures() const { return device_failures_.load(); }
  int64_t moved_requests() const { return moved_requests_.load(); }

 private:
  explicit DevicePool(const DevicePoolOptions& options) : options_(options) {}
  // Places the streams of failed device `from` on the others, or ends them with an error.
  void Rehome(std::size_t from, std::vector<std::unique_ptr<InFlightRequest>> requests, const absl::Status& error);

  DevicePoolOptions options_;
  std::vector<Device> devices_;
  std::vector<std::string> notes_;
  std::vector<std::string> left_out_;
  bool has_accelerators_ = false;
  std::mutex place_mutex_;  // one placement at a time, so two requests do not race for one slot
  std::atomic<int64_t> fallbacks_{0};
  std::atomic<int64_t> device_failures_{0};
  std::atomic<int64_t> moved_requests_{0};
};

}  // namespace accllm::server
