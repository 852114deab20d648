// Pieces of Prometheus' text exposition format (version 0.0.4) shared by the daemon's and the
// gateway's /metrics. Debian 12 packages no Prometheus client library for C++, so this is a
// small hand-written one: a histogram and the formatting helpers.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace accllm::prometheus {

// Seconds, from half a millisecond to two minutes.
std::vector<double> LatencyBuckets();

// The `# HELP` and `# TYPE` lines of a metric family.
void Header(std::string& out, absl::string_view name, absl::string_view type, absl::string_view help);
// A sample value as Prometheus parses it back exactly.
std::string Number(double v);
// "ok", "cancelled", … for gRPC / absl status codes 0-16 ("unknown" outside).
const char* StatusCodeLabel(int code);

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  void Render(std::string& out, absl::string_view name, absl::string_view help) const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace accllm::prometheus
