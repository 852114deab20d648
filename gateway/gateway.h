// accllm-gateway: OpenAI's HTTP API (/v1/completions, /v1/chat/completions, /v1/models) in front
// of accllm-server daemons, plus /health and /metrics.
//
// Each HTTP request becomes one Generate call per choice (prompts × n) on the least loaded
// daemon serving its model; their streams are merged into OpenAI's response or event stream.
// A client that disconnects cancels its calls at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/chat_template.h"
#include "gateway/gateway_metrics.h"
#include "gateway/http_server.h"
#include "gateway/upstream_pool.h"

namespace accllm::gateway {

struct GatewayOptions {
  HttpServerOptions http;
  UpstreamPoolOptions upstreams;
  std::string chat_template = "auto";  // auto: the model's own (as its daemon reports), else plain
  std::vector<std::string> api_keys;   // empty: no authentication
  int max_streams_per_key = 0;         // 0: no limit
  std::vector<std::string> cors_origins;  // "*" allows any; empty: no CORS headers
  int retry_after_seconds = 1;         // in 429 responses
};

// Reads API keys, one per line (blank lines and lines starting with # are skipped).
absl::StatusOr<std::vector<std::string>> ReadApiKeys(const std::string& path);

class Gateway {
 public:
  static absl::StatusOr<std::unique_ptr<Gateway>> Start(const GatewayOptions& options);
  ~Gateway();  // Stop()

  int port() const { return http_->port(); }
  // Stops taking requests, cancels those in flight and waits for their calls to end.
  void Stop();
  UpstreamPool& upstreams() { return *pool_; }

  class Request;

 private:
  explicit Gateway(const GatewayOptions& options) : options_(options) {}
  void Handle(const std::shared_ptr<HttpExchange>& exchange);
  void HandleGenerate(const std::shared_ptr<HttpExchange>& exchange, const std::string& route, bool chat);
  // The list, or with `id` one model (404 when no daemon serves it).
  void HandleModels(const std::shared_ptr<HttpExchange>& exchange, const std::string& id);
  // The Authorization header's key, or the 401 sent; "" when keys are off.
  bool Authorize(const std::shared_ptr<HttpExchange>& exchange, const std::string& route, std::string* key);
  HttpHeaders CorsHeaders(const HttpRequest& request) const;
  ChatTemplate TemplateFor(const std::string& model) const;

  GatewayOptions options_;
  std::unique_ptr<UpstreamPool> pool_;
  GatewayMetrics metrics_;
  std::mutex keys_mutex_;
  std::map<std::string, int> streams_per_key_;  // guarded by keys_mutex_
  std::unique_ptr<HttpServer> http_;  // last: its threads stop first
};

}  // namespace accllm::gateway
