// accllm-gateway: OpenAI's HTTP API in front of accllm-server daemons.
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "gateway/gateway.h"

int main(int argc, char** argv) {
  using accllm::gateway::GatewayOptions;
  GatewayOptions options;
  std::string api_key_file;
  bool upstream_tls = false;
  int resolve_seconds = 10;
  CLI::App app{"accllm-gateway: OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models) "
               "in front of accllm-server daemons"};
  app.add_option("--listen", options.http.listen, "HTTP address, host:port (port 0 picks one)")->capture_default_str();
  app.add_option("--upstream", options.upstreams.targets,
                 "Daemon address host:port; repeatable. A DNS name is resolved to every address it has (a Kubernetes "
                 "headless Service) and re-resolved periodically")
      ->required();
  app.add_option("--resolve-interval", resolve_seconds, "Seconds between DNS re-resolutions")->capture_default_str();
  app.add_option("--threads", options.http.threads, "HTTP threads")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--chat-template", options.chat_template,
                 "auto (the model's own, matched to a built-in) or one of: " +
                     absl::StrJoin(accllm::gateway::ChatTemplateNames(), ", "))
      ->capture_default_str();
  app.add_option("--api-key-file", api_key_file, "File of API keys, one per line: clients send Authorization: Bearer <key>");
  app.add_option("--max-streams-per-key", options.max_streams_per_key, "Requests in flight per API key (0: no limit)")
      ->capture_default_str();
  app.add_option("--max-body-bytes", options.http.max_body_bytes, "Larger request bodies get 413")->capture_default_str();
  app.add_option("--cors-origin", options.cors_origins, "Origin allowed by CORS (repeatable; * for any). Off by default");
  app.add_option("--tls-cert", options.http.tls_cert_file, "PEM certificate chain: serve HTTPS");
  app.add_option("--tls-key", options.http.tls_key_file, "PEM private key for --tls-cert");
  app.add_flag("--upstream-tls", upstream_tls, "Connect to the daemons with TLS");
  app.add_option("--upstream-tls-ca", options.upstreams.tls.ca_file, "CA bundle for the daemons' certificates");
  app.add_option("--upstream-tls-cert", options.upstreams.tls.cert_file, "Client certificate for mTLS to the daemons");
  app.add_option("--upstream-tls-key", options.upstreams.tls.key_file, "Client key for mTLS to the daemons");
  app.add_option("--retry-after", options.retry_after_seconds, "Retry-After seconds in 429 responses")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.upstreams.resolve_interval = std::chrono::seconds(std::max(1, resolve_seconds));
  options.upstreams.tls.enabled = upstream_tls || !options.upstreams.tls.ca_file.empty() ||
                                  !options.upstreams.tls.cert_file.empty();
  if (!api_key_file.empty()) {
    absl::StatusOr<std::vector<std::string>> keys = accllm::gateway::ReadApiKeys(api_key_file);
    if (!keys.ok()) {
      std::cerr << "accllm-gateway: " << keys.status().message() << "\n";
      return 2;
    }
    options.api_keys = *std::move(keys);
  }

  // Signals are taken by sigwait below, not by a handler on whichever thread the kernel picks.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::unique_ptr<accllm::gateway::Gateway>> gateway = accllm::gateway::Gateway::Start(options);
  if (!gateway.ok()) {
    std::cerr << "accllm-gateway: " << gateway.status().message() << "\n";
    return 1;
  }
  std::cerr << "accllm-gateway: upstreams " << absl::StrJoin(options.upstreams.targets, ", ") << "; listening on port "
            << (*gateway)->port() << std::endl;
  int received = 0;
  sigwait(&signals, &received);
  std::cerr << "accllm-gateway: stopping" << std::endl;
  (*gateway)->Stop();
  return 0;
}
