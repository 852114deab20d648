// The accllm.v1.Generation service on gRPC's callback API. Generate is a server-streaming
// reactor: the device worker hands it events; it keeps one write in flight and never blocks.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "accllm/v1/generation.grpc.pb.h"
#include "runtime/engine/backend_factory.h"
#include "server/device_worker.h"

namespace accllm::server {

struct ServiceOptions {
  std::string model_name;
  int default_max_new_tokens = 256;
  int max_prompt_tokens = 0;  // 0: the model's context minus one
};

class GenerationService final : public accllm::v1::Generation::CallbackService {
 public:
  GenerationService(const ServiceOptions& options, const AnyModel& model, const Tokenizer& tokenizer,
                    DeviceWorker& worker);

  // While draining, new Generate calls are refused with UNAVAILABLE.
  void SetDraining(bool draining) { draining_.store(draining); }
  bool draining() const { return draining_.load(); }

  grpc::ServerWriteReactor<accllm::v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                                   const accllm::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const accllm::v1::TokenizeRequest* request,
                                     accllm::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* context, const accllm::v1::ModelInfoRequest* request,
                                      accllm::v1::ModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const accllm::v1::ListModelsRequest* request,
                                       accllm::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* ServerInfo(grpc::CallbackServerContext* context, const accllm::v1::ServerInfoRequest* request,
                                       accllm::v1::ServerInfoResponse* response) override;

 private:
  // Checks the model name; NOT_FOUND names the models served.
  absl::Status CheckModel(const std::string& name) const;
  // The scheduler request for a GenerateRequest (INVALID_ARGUMENT on bad parameters).
  absl::StatusOr<ScheduledRequest> ToScheduledRequest(const accllm::v1::GenerateRequest& request) const;

  ServiceOptions options_;
  const AnyModel& model_;
  const Tokenizer& tokenizer_;
  DeviceWorker& worker_;
  std::atomic<bool> draining_{false};
};

}  // namespace accllm::server
