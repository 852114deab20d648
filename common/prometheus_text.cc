#include "common/prometheus_text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace accllm::prometheus {

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

void Header(std::string& out, absl::string_view name, absl::string_view type, absl::string_view help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

std::string Number(double v) { return absl::StrFormat("%.17g", v); }

const char* StatusCodeLabel(int code) {
  static constexpr const char* kNames[] = {
      "ok",        "cancelled",         "unknown",        "invalid_argument", "deadline_exceeded", "not_found",
      "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted",
      "out_of_range", "unimplemented",  "internal",       "unavailable",      "data_loss",         "unauthenticated"};
  return code >= 0 && code < 17 ? kNames[code] : "unknown";
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  std::size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  std::lock_guard<std::mutex> lock(mutex_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::Render(std::string& out, absl::string_view name, absl::string_view help) const {
  Header(out, name, "histogram", help);
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(&out, name, "_bucket{le=\"", Number(bounds_[i]), "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", count_, "\n");
  absl::StrAppend(&out, name, "_sum ", Number(sum_), "\n", name, "_count ", count_, "\n");
}

}  // namespace accllm::prometheus
