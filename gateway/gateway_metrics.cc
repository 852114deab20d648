#include "gateway/gateway_metrics.h"

#include "absl/strings/str_cat.h"

namespace accllm::gateway {

GatewayMetrics::GatewayMetrics() : ttft_(prometheus::LatencyBuckets()), duration_(prometheus::LatencyBuckets()) {}

void GatewayMetrics::RecordRequest(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

std::string GatewayMetrics::Render(const UpstreamPool& pool) const {
  std::string out;
  prometheus::Header(out, "accllm_gateway_requests_total", "counter", "HTTP requests answered, by route and status.");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [key, count] : requests_) {
      absl::StrAppend(&out, "accllm_gateway_requests_total{route=\"", key.first, "\",status=\"", key.second, "\"} ", count,
                      "\n");
    }
  }
  prometheus::Header(out, "accllm_gateway_streams_open", "gauge", "Generation requests in flight.");
  absl::StrAppend(&out, "accllm_gateway_streams_open ", streams_open_.load(), "\n");
  prometheus::Header(out, "accllm_gateway_upstream_retries_total", "counter",
                     "Calls retried on another upstream after a refusal before their first token.");
  absl::StrAppend(&out, "accllm_gateway_upstream_retries_total ", retries_.load(), "\n");
  const auto upstreams = pool.Upstreams();
  prometheus::Header(out, "accllm_gateway_upstream_up", "gauge", "1 when the upstream's health is SERVING.");
  for (const auto& u : upstreams) {
    absl::StrAppend(&out, "accllm_gateway_upstream_up{upstream=\"", u->address(), "\"} ",
                    u->state() == Upstream::State::kServing ? 1 : 0, "\n");
  }
  prometheus::Header(out, "accllm_gateway_upstream_outstanding", "gauge", "Streams in flight on each upstream.");
  for (const auto& u : upstreams) {
    absl::StrAppend(&out, "accllm_gateway_upstream_outstanding{upstream=\"", u->address(), "\"} ", u->outstanding(), "\n");
  }
  ttft_.Render(out, "accllm_gateway_time_to_first_token_seconds",
               "From the request's arrival to its first generated token leaving the gateway.");
  duration_.Render(out, "accllm_gateway_request_duration_seconds", "From the request's arrival to the end of its response.");
  return out;
}

}  // namespace accllm::gateway
