// The accllm.v1.Generation service on gRPC's callback API. Generate is a server-streaming
// reactor: a device worker hands it events; it keeps one write in flight and never blocks.
//
// The service exists before the model is loaded (so health and ServerInfo answer while it
// loads): until Attach, every model call is UNAVAILABLE; after SetDraining, Generate is.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "accllm/v1/generation.grpc.pb.h"
#include "runtime/engine/backend_factory.h"
#include "server/call_executor.h"
#include "server/device_pool.h"
#include "server/metrics.h"
#include "spdlog/logger.h"

namespace accllm::server {

struct ServiceOptions {
  std::string model_name;
  int default_max_new_tokens = 256;
  int max_prompt_tokens = 0;  // 0: the model's context minus one
};

// What loading produces; the service reads it once attached.
struct ServingRuntime {
  AnyModel model;
  std::unique_ptr<Tokenizer> tokenizer;
  int max_token_bytes = 1;           // the most text bytes any one token stands for
  std::string chat_template;         // the model's own, when it has one
  std::unique_ptr<DevicePool> pool;  // after model and tokenizer: its devices refer to both
};

enum class ServingState { kLoading, kServing, kDraining };
const char* ServingStateName(ServingState state);

class GenerationService final : public accllm::v1::Generation::CallbackService {
 public:
  GenerationService(const ServiceOptions& options, ServerMetrics& metrics, std::shared_ptr<spdlog::logger> log);

  // note: `runtime` must outlive the service's calls (the server stops gRPC before freeing it).
  void Attach(const ServingRuntime& runtime);
  void SetDraining() { state_.store(ServingState::kDraining); }
  // Draining, and every call still being prepared is placed or refused: after this no call
  // reaches the device pool.
  void Shutdown();
  ServingState state() const { return state_.load(); }
  // Generate calls not yet done (their final message may still be on its way to the client).
  int open_streams() const { return open_streams_->load(); }

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

  // The scheduler request for a GenerateRequest, prompt encoded (INVALID_ARGUMENT on bad
  // parameters). Runs on the call executor, never on a gRPC thread.
  absl::StatusOr<ScheduledRequest> ToScheduledRequest(const ServingRuntime& runtime,
                                                      const accllm::v1::GenerateRequest& request) const;

 private:
  static constexpr int kPrepareThreads = 2;

  // The runtime once loaded; UNAVAILABLE while loading.
  absl::StatusOr<const ServingRuntime*> Runtime() const;
  // Checks the model name; NOT_FOUND names the model served.
  absl::Status CheckModel(const std::string& name) const;
  // What can be checked without encoding the prompt (on the gRPC thread).
  absl::Status CheckGenerateRequest(const ServingRuntime& runtime, const accllm::v1::GenerateRequest& request) const;
  // INVALID_ARGUMENT when `text` has more bytes than the prompt limit's tokens could hold.
  absl::Status CheckTextLength(const ServingRuntime& runtime, const std::string& text, const char* what) const;
  int MaxPromptTokens(const ServingRuntime& runtime) const;

  ServiceOptions options_;
  ServerMetrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;  // one line per request
  std::atomic<const ServingRuntime*> runtime_{nullptr};
  std::atomic<ServingState> state_{ServingState::kLoading};
  std::shared_ptr<std::atomic<int>> open_streams_ = std::make_shared<std::atomic<int>>(0);
  CallExecutor executor_;  // last: its threads stop before anything they use
};

}  // namespace accllm::server
