#include "server/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/device_pool.h"

namespace accllm::server {
namespace {

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
  return kNames[code];
}

}  // namespace

const char* FinishReasonLabel(FinishReason reason) {
  switch (reason) {
    case FinishReason::kMaxTokens:
    case FinishReason::kContextFull: return "max_tokens";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString:
    case FinishReason::kStopToken: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kError: return "error";
  }
  return "error";
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

ServerMetrics::ServerMetrics()
    : queue_time_(LatencyBuckets()),
      time_to_first_token_(LatencyBuckets()),
      inter_token_(LatencyBuckets()),
      request_duration_(LatencyBuckets()) {}

void ServerMetrics::RecordFinished(const FinishedRequest& r) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++finished_[static_cast<int>(r.reason)];
    prompt_tokens_ += static_cast<uint64_t>(r.prompt_tokens);
    generated_tokens_ += static_cast<uint64_t>(r.generated_tokens);
  }
  queue_time_.Observe(r.queue_seconds);
  if (r.time_to_first_token_seconds >= 0) time_to_first_token_.Observe(r.time_to_first_token_seconds);
  request_duration_.Observe(r.total_seconds);
}

void ServerMetrics::RecordRefused(absl::StatusCode code) {
  const int c = static_cast<int>(code);
  if (c < 0 || c >= kCodes) return;
  std::lock_guard<std::mutex> lock(mutex_);
  ++refused_[c];
}

std::string ServerMetrics::Render(const DevicePool* pool, absl::string_view state) const {
  std::string out;
  Header(out, "accllm_server_state", "gauge", "1 for the server's current state.");
  for (const char* s : {"loading", "serving", "draining"}) {
    absl::StrAppend(&out, "accllm_server_state{state=\"", s, "\"} ", state == s ? 1 : 0, "\n");
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Header(out, "accllm_requests_total", "counter", "Generate requests finished, by finish reason.");
    // Both spellings of a reason share a label; sum them.
    std::array<std::pair<const char*, uint64_t>, 6> by_label = {{{"max_tokens", 0}, {"eos", 0}, {"stop_sequence", 0},
                                                                 {"cancelled", 0}, {"time_limit", 0}, {"error", 0}}};
    for (int i = 0; i < kReasons; ++i) {
      const char* label = FinishReasonLabel(static_cast<FinishReason>(i));
      for (auto& [name, count] : by_label) {
        if (absl::string_view(name) == label) count += finished_[i];
      }
    }
    for (const auto& [name, count] : by_label) {
      absl::StrAppend(&out, "accllm_requests_total{finish_reason=\"", name, "\"} ", count, "\n");
    }
    Header(out, "accllm_requests_refused_total", "counter", "Generate requests refused before running, by status code.");
    for (int c = 1; c < kCodes; ++c) {
      absl::StrAppend(&out, "accllm_requests_refused_total{code=\"", StatusCodeLabel(c), "\"} ", refused_[c], "\n");
    }
    Header(out, "accllm_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
    absl::StrAppend(&out, "accllm_prompt_tokens_total ", prompt_tokens_, "\n");
    Header(out, "accllm_generated_tokens_total", "counter", "Tokens generated by finished requests.");
    absl::StrAppend(&out, "accllm_generated_tokens_total ", generated_tokens_, "\n");
  }
  queue_time_.Render(out, "accllm_queue_time_seconds", "Time from arrival to admission onto a device.");
  time_to_first_token_.Render(out, "accllm_time_to_first_token_seconds", "Time from arrival to the first token.");
  inter_token_.Render(out, "accllm_inter_token_latency_seconds", "Time between consecutive tokens of a stream.");
  request_duration_.Render(out, "accllm_request_duration_seconds", "Time from arrival to the final message.");

  if (pool == nullptr) return out;
  Header(out, "accllm_cpu_fallbacks_total", "counter",
         "Requests placed on a CPU device because no accelerator had room.");
  absl::StrAppend(&out, "accllm_cpu_fallbacks_total ", pool->fallbacks(), "\n");
  Header(out, "accllm_device_failures_total", "counter", "Devices that failed and were taken out of service.");
  absl::StrAppend(&out, "accllm_device_failures_total ", pool->device_failures(), "\n");
  Header(out, "accllm_streams_moved_total", "counter", "Streams moved off a failed device to go on elsewhere.");
  absl::StrAppend(&out, "accllm_streams_moved_total ", pool->moved_requests(), "\n");
  Header(out, "accllm_placement_policy", "gauge", "1 for the configured fallback policy.");
  absl::StrAppend(&out, "accllm_placement_policy{policy=\"", FallbackPolicyName(pool->policy()), "\"} 1\n");

  struct Gauge {
    const char* name;
    const char* help;
    int Scheduler::Load::*field;
  };
  static constexpr Gauge kGauges[] = {
      {"accllm_queue_length", "Requests waiting for a device.", &Scheduler::Load::waiting},
      {"accllm_running_batch_size", "Sequences in the device's running batch.", &Scheduler::Load::running},
      {"accllm_max_running", "Most sequences the device batches (configured).", &Scheduler::Load::max_running},
      {"accllm_max_waiting", "Longest wait queue of the device (configured).", &Scheduler::Load::max_waiting},
      {"accllm_kv_pages_used", "KV pages holding tokens.", &Scheduler::Load::pages_in_use},
      {"accllm_kv_pages_reserved", "KV pages reserved for running requests' worst case.",
       &Scheduler::Load::reserved_pages},
      {"accllm_kv_pages_capacity", "KV pages in the device's pool.", &Scheduler::Load::pages_total},
      {"accllm_device_healthy", "1 while the device takes work; 0 after it failed.", &Scheduler::Load::healthy},
      {"accllm_full_length_streams", "Streams of the longest length the device's KV pool holds at once.",
       &Scheduler::Load::full_length_streams},
  };
  std::vector<Scheduler::Load> loads;
  for (const DevicePool::Device& d : pool->devices()) loads.push_back(d.worker->scheduler().load());
  for (const Gauge& g : kGauges) {
    Header(out, g.name, "gauge", g.help);
    for (std::size_t i = 0; i < loads.size(); ++i) {
      const auto& d = pool->devices()[i];
      absl::StrAppend(&out, g.name, "{device=\"", d.name, "\",fallback=\"", d.fallback ? "true" : "false", "\"} ",
                      loads[i].*g.field, "\n");
    }
  }
  Header(out, "accllm_kv_pages_free", "gauge", "KV pages free in the device's pool.");
  for (std::size_t i = 0; i < loads.size(); ++i) {
    const auto& d = pool->devices()[i];
    absl::StrAppend(&out, "accllm_kv_pages_free{device=\"", d.name, "\",fallback=\"", d.fallback ? "true" : "false",
                    "\"} ", loads[i].pages_total - loads[i].pages_in_use, "\n");
  }
  Header(out, "accllm_device_tokens_total", "counter", "Prompt and generated tokens the device has run.");
  for (std::size_t i = 0; i < loads.size(); ++i) {
    const auto& d = pool->devices()[i];
    absl::StrAppend(&out, "accllm_device_tokens_total{device=\"", d.name, "\",fallback=\"", d.fallback ? "true" : "false",
                    "\"} ", loads[i].tokens_processed, "\n");
  }
  return out;
}

}  // namespace accllm::server
