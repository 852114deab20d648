// The server's Prometheus metrics, rendered in the text exposition format (version 0.0.4): a
// registry holding exactly the metrics the server exports.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "common/prometheus_text.h"
#include "runtime/generate/generation_options.h"

namespace accllm::server {

class DevicePool;

using prometheus::Histogram;

struct FinishedRequest {
  FinishReason reason;
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double queue_seconds = 0;
  double time_to_first_token_seconds = -1;  // < 0: no token was produced
  double total_seconds = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  void RecordFinished(const FinishedRequest& request);
  void RecordInterToken(double seconds) { inter_token_.Observe(seconds); }
  void RecordRefused(absl::StatusCode code);

  // `pool` may be null (still loading). `state` is loading, serving or draining.
  std::string Render(const DevicePool* pool, absl::string_view state) const;

 private:
  static constexpr int kReasons = static_cast<int>(FinishReason::kError) + 1;
  static constexpr int kCodes = 17;  // gRPC/absl status codes 0-16

  mutable std::mutex mutex_;
  std::array<uint64_t, kReasons> finished_{};  // guarded by mutex_
  std::array<uint64_t, kCodes> refused_{};     // guarded by mutex_
  uint64_t prompt_tokens_ = 0;                 // guarded by mutex_
  uint64_t generated_tokens_ = 0;              // guarded by mutex_
  Histogram queue_time_;
  Histogram time_to_first_token_;
  Histogram inter_token_;
  Histogram request_duration_;
};

// The API's name for a finish reason, lower case (as in the FinishReason enum of the proto).
const char* FinishReasonLabel(FinishReason reason);

}  // namespace accllm::server
