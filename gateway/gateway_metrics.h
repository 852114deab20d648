// The gateway's Prometheus metrics: requests by route and status, open streams, upstream state,
// time to first token and end-to-end latency.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "common/prometheus_text.h"
#include "gateway/upstream_pool.h"

namespace accllm::gateway {

class GatewayMetrics {
 public:
  GatewayMetrics();
  void RecordRequest(const std::string& route, int status);
  void RecordFirstToken(double seconds) { ttft_.Observe(seconds); }
  void RecordDuration(double seconds) { duration_.Observe(seconds); }
  void RecordRetry() { retries_.fetch_add(1); }
  std::atomic<int>& streams_open() { return streams_open_; }
  std::string Render(const UpstreamPool& pool) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // guarded by mutex_
  std::atomic<int> streams_open_{0};
  std::atomic<uint64_t> retries_{0};
  prometheus::Histogram ttft_;
  prometheus::Histogram duration_;
};

}  // namespace accllm::gateway
