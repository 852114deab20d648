#include "server/server.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace accllm::server {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  auto server = std::unique_ptr<Server>(new Server());
  absl::StatusOr<AnyModel> model = LoadAnyModel(options.model_path, LoadMode::kMap);
  if (!model.ok()) return model.status();
  server->model_ = std::move(*model);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(server->model_, options.tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  server->tokenizer_ = std::move(*tokenizer);
  BackendOptions backend_options = options.backend;
  if (backend_options.kv_pages == 0) {
    // Room for max_running sequences of the model's full context, so that admission (which
    // reserves each request's worst case) lets the whole batch run.
    backend_options.kv_pages =
        std::max(1, options.scheduler.max_running) *
        SequenceKv::MaxPages(LambdaFor(backend_options), backend_options.page_tokens, options.scheduler.prefill_chunk,
                             server->model_.config().max_seq_len);
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(backend_options, server->model_);
  if (!backend.ok()) return backend.status();
  server->worker_ = std::make_unique<DeviceWorker>(std::move(*backend), *server->tokenizer_, options.scheduler);

  ServiceOptions service = options.service;
  service.model_name = !options.model_name.empty() ? options.model_name
                                                    : std::filesystem::path(options.model_path).stem().string();
  server->service_ = std::make_unique<GenerationService>(service, server->model_, *server->tokenizer_, *server->worker_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  server->grpc_ = builder.BuildAndStart();
  if (server->grpc_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  server->grpc_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

void Server::Drain(double grace_seconds) {
  service_->SetDraining(true);
  grpc_->GetHealthCheckService()->SetServingStatus(false);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                            std::chrono::duration<double>(grace_seconds));
  while (std::chrono::steady_clock::now() < until &&
         (worker_->scheduler().running() > 0 || worker_->scheduler().waiting() > 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Stop();
}

void Server::Stop() {
  if (!grpc_) return;
  // Order matters: every stream gets its final message while the worker and the gRPC server are
  // both alive; the gRPC server then finishes the calls (no reactor outlives Shutdown); only then
  // may the worker, which reactors call into on cancel, go away.
  worker_->CancelAllAndWait();
  grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc_.reset();
  worker_.reset();
}


Server::~Server() { Stop(); }

}  // namespace accllm::server
