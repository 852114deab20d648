// An accllm-server instance: model, tokenizer, device worker, gRPC server with the Generation
// service, the standard health service and reflection. Used by the binary and by the tests.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "runtime/engine/backend_factory.h"
#include "runtime/serving/scheduler.h"
#include "server/device_worker.h"
#include "server/generation_service.h"

namespace accllm::server {

struct ServerOptions {
  std::string model_path;
  std::string tokenizer_path;  // empty: beside the model
  std::string model_name;      // empty: the model file's stem
  std::string listen = "127.0.0.1:50051";
  BackendOptions backend;
  SchedulerOptions scheduler;
  ServiceOptions service;
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();

  int port() const { return port_; }
  // Stops admitting (health NOT_SERVING, Generate UNAVAILABLE), lets running streams finish for
  // up to `grace_seconds`, then ends the rest as cancelled and stops.
  void Drain(double grace_seconds);

 private:
  Server() = default;
  void Stop();

  AnyModel model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<DeviceWorker> worker_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> grpc_;
  int port_ = 0;
};

}  // namespace accllm::server
