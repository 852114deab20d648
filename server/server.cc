#include "server/server.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "common/host_port.h"
#include "httplib.h"
#include "runtime/model/hf_checkpoint.h"
#include "spdlog/spdlog.h"

namespace accllm::server {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the TLS ", what, " '", path, "'"));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the TLS ", what, " '", path, "' is not PEM"));
  }
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const TlsOptions& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty()) {
    if (!tls.client_ca_file.empty()) return absl::InvalidArgumentError("a client CA needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and a key");
  }
  grpc::SslServerCredentialsOptions ssl;
  absl::StatusOr<std::string> cert = ReadPem(tls.cert_file, "certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(tls.key_file, "key");
  if (!key.ok()) return key.status();
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem(tls.client_ca_file, "client CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& o) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (o.model_path.empty()) return bad("a model is required (--model)");
  if (o.backend.kv != "f32" && o.backend.kv != "kv4") return bad(absl::StrCat("--kv must be f32 or kv4, not '", o.backend.kv, "'"));
  if (o.backend.window < 0) return bad(absl::StrCat("--window must be >= 0 (0: full attention), got ", o.backend.window));
  if (o.backend.sinks < 0) return bad(absl::StrCat("--sinks must be >= 0, got ", o.backend.sinks));
  if (o.backend.threads < 0) return bad(absl::StrCat("--threads must be >= 0 (0: all cores), got ", o.backend.threads));
  if (o.backend.page_tokens < 1) return bad(absl::StrCat("--page-tokens must be >= 1, got ", o.backend.page_tokens));
  if (o.backend.kv_pages < 0) return bad(absl::StrCat("--kv-pages must be >= 0 (0: sized for --max-running), got ", o.backend.kv_pages));
  if (o.backend.sim_fault_after_steps < 0) return bad("--sim-fault-after must be >= 0");
  if (o.scheduler.max_running < 1) return bad(absl::StrCat("--max-running must be >= 1, got ", o.scheduler.max_running));
  if (o.scheduler.max_waiting < 0) return bad(absl::StrCat("--max-waiting must be >= 0, got ", o.scheduler.max_waiting));
  if (o.scheduler.prefill_chunk < 1) return bad(absl::StrCat("--prefill-chunk must be >= 1, got ", o.scheduler.prefill_chunk));
  if (o.service.default_max_new_tokens < 1) {
    return bad(absl::StrCat("--max-new-tokens must be >= 1, got ", o.service.default_max_new_tokens));
  }
  if (o.service.max_prompt_tokens < 0) {
    return bad(absl::StrCat("--max-prompt-tokens must be >= 0 (0: the context - 1), got ", o.service.max_prompt_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  absl::StatusOr<std::unique_ptr<Server>> server = Listen(options);
  if (!server.ok()) return server.status();
  if (absl::Status s = (*server)->Load(); !s.ok()) return s;
  return server;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Listen(const ServerOptions& options) {
  auto server = std::unique_ptr<Server>(new Server());
  server->options_ = options;
  if (server->options_.model_name.empty()) {
    server->options_.model_name = std::filesystem::path(options.model_path).stem().string();
  }
  // Bad options, device lists and policies are refused before anything starts.
  if (absl::Status s = ValidateServerOptions(options); !s.ok()) return s;
  if (absl::StatusOr<std::vector<DeviceSpec>> specs = ParseDeviceList(options.devices.devices); !specs.ok()) {
    return specs.status();
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();

  ServiceOptions service = options.service;
  service.model_name = server->options_.model_name;
  // The process's default logger (the binary points it at stderr), fetched here, before any device
  // thread exists.
  server->log_ = spdlog::default_logger();
  server->service_ = std::make_unique<GenerationService>(service, server->metrics_, server->log_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  server->grpc_ = builder.BuildAndStart();
  if (server->grpc_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  server->grpc_->GetHealthCheckService()->SetServingStatus(false);
  if (absl::Status s = server->StartMetrics(); !s.ok()) return s;
  return server;
}

absl::Status Server::StartMetrics() {
  if (options_.metrics_listen.empty()) return absl::OkStatus();
  absl::StatusOr<std::pair<std::string, int>> address = SplitHostPort(options_.metrics_listen);
  if (!address.ok()) return address.status();
  http_ = std::make_unique<httplib::Server>();
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    const ServingRuntime* runtime = service_->state() == ServingState::kLoading ? nullptr : runtime_.get();
    response.set_content(metrics_.Render(runtime ? runtime->pool.get() : nullptr, ServingStateName(service_->state())),
                         "text/plain; version=0.0.4; charset=utf-8");
  });
  http_->Get("/healthz", [this](const httplib::Request&, httplib::Response& response) {
    const ServingState state = service_->state();
    response.status = state == ServingState::kServing ? 200 : 503;
    response.set_content(std::string(ServingStateName(state)) + "\n", "text/plain");
  });
  const auto& [host, port] = *address;
  metrics_port_ = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (metrics_port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", options_.metrics_listen));
  }
  http_thread_ = std::thread([this] { http_->listen_after_bind(); });
  return absl::OkStatus();
}

absl::Status Server::Load() {
  auto runtime = std::make_unique<ServingRuntime>();
  absl::StatusOr<AnyModel> model = LoadAnyModel(options_.model_path, LoadMode::kMap);
  if (!model.ok()) return model.status();
  runtime->model = std::move(*model);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(runtime->model, options_.tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  runtime->tokenizer = std::move(*tokenizer);
  // tokenizer_config.json lives in the checkpoint's directory, or beside the tokenizer.
  namespace fs = std::filesystem;
  const fs::path config_dir = fs::is_directory(options_.model_path) || options_.tokenizer_path.empty()
                                  ? fs::path(options_.model_path)
                                  : fs::path(options_.tokenizer_path).parent_path();
  if (fs::is_directory(config_dir)) {
    absl::StatusOr<std::string> chat_template = ReadHfChatTemplate(config_dir.string());
    if (!chat_template.ok()) return chat_template.status();
    runtime->chat_template = std::move(*chat_template);
  }
  for (int id = 0; id < runtime->tokenizer->vocab_size(); ++id) {
    runtime->max_token_bytes = std::max(runtime->max_token_bytes, static_cast<int>(runtime->tokenizer->TokenBytes(id).size()));
  }
  BackendOptions backend = options_.backend;
  if (backend.kv_pages == 0) {
    // Room for max_running sequences of the model's full context, so that admission (which
    // reserves each request's worst case) lets the whole batch run; a device with less memory
    // (a card's KV banks) takes what it holds.
    backend.kv_pages = std::max(1, options_.scheduler.max_running) *
                       SequenceKv::MaxPages(LambdaFor(backend), backend.page_tokens, options_.scheduler.prefill_chunk,
                                            runtime->model.config().max_seq_len);
    backend.kv_pages_fit_device = true;
  }
  DevicePoolOptions devices = options_.devices;
  devices.on_device_failure = [this](const std::string& message, bool any_healthy) {
    log_->error("{}", message);
    // With no device left the server cannot serve: say so to load balancers.
    if (!any_healthy) {
      log_->error("no healthy device left; health is NOT_SERVING");
      std::lock_guard<std::mutex> lock(grpc_mutex_);
      if (grpc_) grpc_->GetHealthCheckService()->SetServingStatus(false);
    }
  };
  absl::StatusOr<std::unique_ptr<DevicePool>> pool =
      DevicePool::Create(devices, backend, options_.scheduler, runtime->model, *runtime->tokenizer);
  if (!pool.ok()) return pool.status();
  runtime->pool = std::move(*pool);
  for (const std::string& note : runtime->pool->notes()) log_->info("{}; serving on the other devices", note);
  for (const std::string& why : runtime->pool->left_out()) log_->error("{}; serving on the other devices", why);
  runtime_ = std::move(runtime);
  service_->Attach(*runtime_);
  grpc_->GetHealthCheckService()->SetServingStatus(true);
  for (const DevicePool::Device& d : runtime_->pool->devices()) {
    const Scheduler::Load load = d.worker->scheduler().load();
    log_->info("device {} ({}{}): {} KV pages ({} full-length streams), batch up to {}", d.name,
               d.worker->backend().name(), d.fallback ? ", fallback" : "", load.pages_total, load.full_length_streams,
               load.max_running);
  }
  return absl::OkStatus();
}

void Server::Drain(double grace_seconds) {
  service_->SetDraining();
  if (grpc_) grpc_->GetHealthCheckService()->SetServingStatus(false);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                            std::chrono::duration<double>(grace_seconds));
  while (runtime_ && std::chrono::steady_clock::now() < until && !runtime_->pool->Idle()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Stop();
}

void Server::Stop() {
  // The metrics endpoint reads the runtime: it stops first.
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
    http_.reset();
  }
  if (grpc_) {
    // Order matters: no call is still being prepared (so none reaches the devices from now on);
    // every stream gets its final message while the devices and the gRPC server are both alive;
    // the gRPC server then finishes the calls (no reactor outlives Shutdown); only then may the
    // devices, which reactors call into on cancel, go away. gRPC's Shutdown would wait out its
    // whole deadline for clients that merely keep their connection open, so it gets a short one
    // once every stream has been written out.
    service_->Shutdown();
    if (runtime_) runtime_->pool->CancelAllAndWait();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (service_->open_streams() > 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    {
      std::lock_guard<std::mutex> lock(grpc_mutex_);  // a device failing now must not see it half gone
      grpc_.reset();
    }
    runtime_.reset();
  }
}

Server::~Server() { Stop(); }

}  // namespace accllm::server
