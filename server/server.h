// An accllm-server instance: the gRPC server (Generation service, standard health service,
// reflection; TLS optional), the Prometheus metrics endpoint, and once loaded the model,
// tokenizer and device pool. Used by the binary and by the tests.
//
// Lifecycle: Listen (health NOT_SERVING, model calls UNAVAILABLE) → Load (SERVING) → Drain
// (NOT_SERVING, Generate UNAVAILABLE, running streams finish within the grace period) → stopped.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "runtime/engine/backend_factory.h"
#include "runtime/serving/scheduler.h"
#include "server/device_pool.h"
#include "server/generation_service.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}

namespace accllm::server {

struct TlsOptions {
  std::string cert_file;       // PEM; with key_file, the gRPC port speaks TLS
  std::string key_file;
  std::string client_ca_file;  // PEM; set: clients must present a certificate it signed (mTLS)
};

struct ServerOptions {
  std::string model_path;
  std::string tokenizer_path;  // empty: beside the model
  std::string model_name;      // empty: the model file's stem
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen;  // host:port for GET /metrics and /healthz; empty: off
  TlsOptions tls;
  BackendOptions backend;
  DevicePoolOptions devices;
  SchedulerOptions scheduler;
  ServiceOptions service;
};

// INVALID_ARGUMENT naming the flag, for options no server could run with.
absl::Status ValidateServerOptions(const ServerOptions& options);

class Server {
 public:
  // Listen, then Load.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  // Opens the ports without loading anything.
  static absl::StatusOr<std::unique_ptr<Server>> Listen(const ServerOptions& options);
  // Loads the model, the tokenizer and the devices, then serves.
  absl::Status Load();
  ~Server();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  ServingState state() const { return service_->state(); }
  // Stops admitting, lets running streams finish for up to `grace_seconds`, then ends the rest
  // as cancelled and stops.
  void Drain(double grace_seconds);

 private:
  Server() = default;
  absl::Status StartMetrics();
  void Stop();

  ServerOptions options_;
  ServerMetrics metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<ServingRuntime> runtime_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::mutex grpc_mutex_;  // guards grpc_ against a device failure reported while stopping
  int port_ = 0;
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int metrics_port_ = 0;
};

}  // namespace accllm::server
