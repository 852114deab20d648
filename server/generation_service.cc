#include "server/generation_service.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/utf8.h"
#include "server/status_mapping.h"

namespace accllm::server {
namespace {

using accllm::v1::GenerateRequest;
using accllm::v1::GenerateResponse;
using Clock = std::chrono::steady_clock;

accllm::v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kMaxTokens:
    case FinishReason::kContextFull: return accllm::v1::MAX_TOKENS;
    case FinishReason::kEos: return accllm::v1::EOS;
    case FinishReason::kStopString:
    case FinishReason::kStopToken: return accllm::v1::STOP_SEQUENCE;
    case FinishReason::kCancelled: return accllm::v1::CANCELLED;
    case FinishReason::kTimeLimit: return accllm::v1::TIME_LIMIT;
    case FinishReason::kError: return accllm::v1::ERROR;
  }
  return accllm::v1::FINISH_REASON_UNSPECIFIED;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Streams one request's events to the client: one write in flight, never blocking. The state
// the device worker writes into is shared, so that events arriving after the client left are
// dropped safely.
class GenerateReactor final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  struct Shared {
    std::mutex mutex;
    GenerateReactor* reactor = nullptr;  // null once the call is done
    std::deque<GenerateResponse> queue;
    bool writing = false;
    bool final_queued = false;
    bool finished = false;  // Finish was called: nothing more may be written
    Clock::time_point arrived, first_token, last_token;
    bool return_ids = false;
    bool return_logprobs = false;
    std::string request_id;
    const Tokenizer* tokenizer = nullptr;
    ServerMetrics* metrics = nullptr;
    DevicePool* pool = nullptr;
    std::shared_ptr<std::atomic<bool>> cancel;  // the request's, on whichever device it runs
    spdlog::logger* log = nullptr;
  };

  GenerateReactor(DevicePool& pool, ServerMetrics& metrics, spdlog::logger& log, const Tokenizer& tokenizer,
                  ScheduledRequest request, const GenerateRequest& proto, Clock::time_point arrived,
                  std::shared_ptr<std::atomic<int>> open)
      : shared_(std::make_shared<Shared>()), open_(std::move(open)) {
    open_->fetch_add(1);
    shared_->reactor = this;
    shared_->return_ids = proto.return_token_ids();
    shared_->return_logprobs = proto.return_logprobs();
    shared_->request_id = proto.request_id();
    shared_->tokenizer = &tokenizer;
    shared_->metrics = &metrics;
    shared_->log = &log;
    shared_->pool = &pool;
    shared_->cancel = request.cancel;
    shared_->arrived = arrived;
    std::shared_ptr<Shared> shared = shared_;
    request.on_event = [shared](const StreamEvent& e) { Push(shared, e); };
    // Held across placement so that no event is handled (and no write started) before this
    // constructor has finished.
    std::unique_lock<std::mutex> lock(shared_->mutex);
    absl::StatusOr<std::string> placed = pool.Submit(std::move(request));
    if (!placed.ok()) {
      shared_->finished = true;
      lock.unlock();
      LogRefusal(proto.request_id(), placed.status(), metrics, log);
      Finish(ToGrpcStatus(placed.status()));
      return;
    }
  }

  static void LogRefusal(const std::string& request_id, const absl::Status& status, ServerMetrics& metrics,
                         spdlog::logger& log) {
    metrics.RecordRefused(status.code());
    log.info("refused id=\"{}\" code={} message=\"{}\"", request_id, absl::StatusCodeToString(status.code()),
                 std::string(status.message()));
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(shared_->mutex);
    if (!ok) {  // the client is gone
      shared_->queue.clear();
      shared_->writing = false;
      shared_->finished = true;
      lock.unlock();
      CancelRequest();
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    const bool was_final = shared_->queue.front().has_final();
    shared_->queue.pop_front();
    if (was_final) {
      shared_->writing = false;
      shared_->finished = true;
      lock.unlock();
      Finish(grpc::Status::OK);
      return;
    }
    if (shared_->queue.empty()) {
      shared_->writing = false;
      return;
    }
    GenerateResponse* next = &shared_->queue.front();
    lock.unlock();
    StartWrite(next);
  }

  void OnCancel() override { CancelRequest(); }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->reactor = nullptr;
    }
    open_->fetch_sub(1);
    delete this;
  }

 private:
  // Ends the request at its device's next step (the flag follows it if it moves).
  void CancelRequest() {
    shared_->cancel->store(true);
    shared_->pool->WakeAll();
  }

  static void AddLogprobs(const Shared& shared, const StreamEvent& e, accllm::v1::TokenChunk& chunk) {
    auto set = [&](accllm::v1::TokenLogprob* out, int token, float logprob) {
      out->set_token_id(token);
      out->set_token(shared.tokenizer->TokenBytes(token));
      out->set_logprob(logprob);
    };
    accllm::v1::TokenLogprobs* lp = chunk.add_logprobs();
    set(lp->mutable_sampled(), e.token, e.logprobs->logprob);
    for (const TokenLogprobs::Alternative& alt : e.logprobs->top) set(lp->add_top(), alt.token, alt.logprob);
  }

  static void Push(const std::shared_ptr<Shared>& shared, const StreamEvent& e) {
    std::unique_lock<std::mutex> lock(shared->mutex);
    const auto now = Clock::now();
    if (e.token >= 0) {
      if (e.generated_tokens == 1) {
        shared->first_token = now;
      } else {
        shared->metrics->RecordInterToken(Seconds(now - shared->last_token));
      }
      shared->last_token = now;
    }
    if (e.finish) RecordFinished(*shared, e, now);
    if (shared->reactor == nullptr || shared->finished || shared->final_queued) return;
    if (e.token >= 0 && (!e.text.empty() || shared->return_ids || shared->return_logprobs)) {
      GenerateResponse chunk;
      chunk.mutable_chunk()->set_text(e.text);
      if (shared->return_ids) chunk.mutable_chunk()->add_token_ids(e.token);
      if (shared->return_logprobs && e.logprobs) AddLogprobs(*shared, e, *chunk.mutable_chunk());
      shared->queue.push_back(std::move(chunk));
    }
    if (e.finish) {
      GenerateResponse last;
      auto* f = last.mutable_final();
      f->set_finish_reason(ToProto(*e.finish));
      f->mutable_usage()->set_prompt_tokens(e.prompt_tokens);
      f->mutable_usage()->set_generated_tokens(e.generated_tokens);
      const bool started = e.generated_tokens > 0;
      f->mutable_timing()->set_queue_seconds(e.queue_seconds);
      f->mutable_timing()->set_time_to_first_token_seconds(started ? Seconds(shared->first_token - shared->arrived) : 0);
      f->mutable_timing()->set_decode_seconds(started ? Seconds(now - shared->first_token) : 0);
      f->mutable_timing()->set_total_seconds(Seconds(now - shared->arrived));
      f->set_device(e.device);
      f->set_request_id(shared->request_id);
      if (!e.error.ok()) f->set_error(std::string(e.error.message()));
      shared->queue.push_back(std::move(last));
      shared->final_queued = true;
    }
    if (shared->writing || shared->queue.empty()) return;
    shared->writing = true;
    GenerateReactor* reactor = shared->reactor;
    GenerateResponse* next = &shared->queue.front();
    lock.unlock();
    reactor->StartWrite(next);
  }

  // Metrics and the one log line per request, also for a client that already left.
  static void RecordFinished(const Shared& shared, const StreamEvent& e, Clock::time_point now) {
    FinishedRequest done;
    done.reason = *e.finish;
    done.prompt_tokens = e.prompt_tokens;
    done.generated_tokens = e.generated_tokens;
    done.queue_seconds = e.queue_seconds;
    const bool started = e.generated_tokens > 0;
    done.time_to_first_token_seconds = started ? Seconds(shared.first_token - shared.arrived) : -1;
    done.total_seconds = Seconds(now - shared.arrived);
    shared.metrics->RecordFinished(done);
    const double decode = started ? Seconds(now - shared.first_token) : 0;
    shared.log->info(
        "request id=\"{}\" device={} finish={} prompt_tokens={} generated_tokens={} queue_ms={:.2f} ttft_ms={:.2f} "
        "decode_ms={:.2f} total_ms={:.2f} tokens_per_s={:.1f}{}{}",
        shared.request_id, e.device, FinishReasonLabel(done.reason), done.prompt_tokens, done.generated_tokens,
        done.queue_seconds * 1e3, started ? done.time_to_first_token_seconds * 1e3 : 0.0, decode * 1e3,
        done.total_seconds * 1e3, decode > 0 ? (done.generated_tokens - 1) / decode : 0.0,
        e.error.ok() ? "" : " error=", e.error.ok() ? "" : std::string(e.error.message()));
  }

  std::shared_ptr<Shared> shared_;
  std::shared_ptr<std::atomic<int>> open_;
};

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

const char* ServingStateName(ServingState state) {
  switch (state) {
    case ServingState::kLoading: return "loading";
    case ServingState::kServing: return "serving";
    case ServingState::kDraining: return "draining";
  }
  return "?";
}

GenerationService::GenerationService(const ServiceOptions& options, ServerMetrics& metrics,
                                     std::shared_ptr<spdlog::logger> log)
    : options_(options), metrics_(metrics), log_(std::move(log)) {}

void GenerationService::Attach(const ServingRuntime& runtime) {
  runtime_.store(&runtime);
  ServingState expected = ServingState::kLoading;
  state_.compare_exchange_strong(expected, ServingState::kServing);
}

absl::StatusOr<const ServingRuntime*> GenerationService::Runtime() const {
  const ServingRuntime* runtime = runtime_.load();
  if (runtime == nullptr) return absl::UnavailableError("the model is still loading; retry shortly");
  return runtime;
}

absl::Status GenerationService::CheckModel(const std::string& name) const {
  if (name.empty() || name == options_.model_name) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("unknown model '", name, "' (this server serves '", options_.model_name, "')"));
}

absl::StatusOr<ScheduledRequest> GenerationService::ToScheduledRequest(const ServingRuntime& runtime,
                                                                       const GenerateRequest& r) const {
  if (absl::Status s = CheckModel(r.model()); !s.ok()) return s;
  ScheduledRequest out;
  switch (r.prompt_case()) {
    case GenerateRequest::kText: {
      if (!IsValidUtf8(r.text())) return absl::InvalidArgumentError("the prompt text is not valid UTF-8");
      absl::StatusOr<std::vector<int>> ids = runtime.tokenizer->Encode(r.text(), /*add_bos=*/true);
      if (!ids.ok()) return ids.status();
      out.prompt_ids = std::move(*ids);
      break;
    }
    case GenerateRequest::kTokenIds:
      out.prompt_ids.assign(r.token_ids().ids().begin(), r.token_ids().ids().end());
      if (out.prompt_ids.empty()) return absl::InvalidArgumentError("token_ids is empty");
      break;
    default:
      return absl::InvalidArgumentError("a prompt (text or token_ids) is required");
  }
  const int max_prompt = options_.max_prompt_tokens > 0 ? options_.max_prompt_tokens
                                                        : runtime.model.config().max_seq_len - 1;
  if (static_cast<int>(out.prompt_ids.size()) > max_prompt) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", out.prompt_ids.size(), " tokens; the limit is ", max_prompt));
  }
  if (r.max_new_tokens() < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  if (r.time_limit_seconds() < 0) return absl::InvalidArgumentError("time_limit_seconds must be >= 0");
  if (r.top_logprobs() != 0 && !r.return_logprobs()) {
    return absl::InvalidArgumentError("top_logprobs needs return_logprobs");
  }
  GenerationOptions& o = out.options;
  o.max_new_tokens = r.max_new_tokens() > 0 ? r.max_new_tokens() : options_.default_max_new_tokens;
  o.sampling.temperature = r.sampling().temperature();
  o.sampling.top_p = r.sampling().top_p() == 0.0f ? 1.0f : r.sampling().top_p();
  o.sampling.top_k = r.sampling().top_k();
  o.sampling.min_p = r.sampling().min_p();
  o.sampling.repetition_penalty = r.sampling().repetition_penalty() == 0.0f ? 1.0f : r.sampling().repetition_penalty();
  o.sampling.seed = r.sampling().has_seed() ? r.sampling().seed() : std::random_device{}();
  o.stop_strings.assign(r.stop().begin(), r.stop().end());
  o.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
  o.ignore_eos = r.ignore_eos();
  o.logprobs = r.return_logprobs() ? r.top_logprobs() : -1;
  out.priority = r.priority();
  if (r.time_limit_seconds() > 0) {
    out.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(r.time_limit_seconds()));
  }
  return out;
}

grpc::ServerWriteReactor<GenerateResponse>* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                                        const GenerateRequest* request) {
  const Clock::time_point arrived = Clock::now();
  absl::StatusOr<const ServingRuntime*> runtime = Runtime();
  absl::StatusOr<ScheduledRequest> scheduled = !runtime.ok() ? runtime.status()
                                               : state_.load() == ServingState::kDraining
                                                   ? absl::UnavailableError("the server is draining; retry on another replica")
                                                   : ToScheduledRequest(**runtime, *request);
  if (scheduled.ok()) {
    // The gRPC deadline, if any, is a time limit too.
    const auto deadline = context->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      const auto steady = Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
      scheduled->deadline = std::min(scheduled->deadline, steady);
    }
    return new GenerateReactor(*(*runtime)->pool, metrics_, *log_, *(*runtime)->tokenizer, std::move(*scheduled), *request,
                               arrived, open_streams_);
  }
  // Refused before any work: the stream ends with the status and no messages.
  class Refusal final : public grpc::ServerWriteReactor<GenerateResponse> {
   public:
    explicit Refusal(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
    void OnDone() override { delete this; }
  };
  GenerateReactor::LogRefusal(request->request_id(), scheduled.status(), metrics_, *log_);
  return new Refusal(scheduled.status());
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const accllm::v1::TokenizeRequest* request,
                                                      accllm::v1::TokenizeResponse* response) {
  absl::StatusOr<const ServingRuntime*> runtime = Runtime();
  if (!runtime.ok()) return Reply(context, runtime.status());
  if (absl::Status s = CheckModel(request->model()); !s.ok()) return Reply(context, s);
  if (!IsValidUtf8(request->text())) return Reply(context, absl::InvalidArgumentError("the text is not valid UTF-8"));
  const Tokenizer& tokenizer = *(*runtime)->tokenizer;
  absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(request->text(), request->add_bos());
  if (!ids.ok()) return Reply(context, ids.status());
  for (int id : *ids) {
    response->add_ids(id);
    response->add_pieces(tokenizer.TokenBytes(id));
  }
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::ModelInfo(grpc::CallbackServerContext* context,
                                                       const accllm::v1::ModelInfoRequest* request,
                                                       accllm::v1::ModelInfoResponse* response) {
  absl::StatusOr<const ServingRuntime*> runtime = Runtime();
  if (!runtime.ok()) return Reply(context, runtime.status());
  if (absl::Status s = CheckModel(request->model()); !s.ok()) return Reply(context, s);
  const LlamaConfig& c = (*runtime)->model.config();
  response->set_name(options_.model_name);
  response->set_format((*runtime)->model.packed ? "packed W2A8KV4" : "fp32");
  response->set_dim(c.dim);
  response->set_hidden_dim(c.hidden_dim);
  response->set_layers(c.n_layers);
  response->set_heads(c.n_heads);
  response->set_kv_heads(c.n_kv_heads);
  response->set_vocab_size(c.vocab_size);
  response->set_context_length(c.max_seq_len);
  const LambdaConfig& lambda = (*runtime)->pool->first_backend().lambda();
  response->set_lambda_sinks(lambda.full() ? 0 : lambda.sinks);
  response->set_lambda_window(lambda.full() ? 0 : lambda.window);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::ListModels(grpc::CallbackServerContext* context,
                                                        const accllm::v1::ListModelsRequest*,
                                                        accllm::v1::ListModelsResponse* response) {
  response->add_models(options_.model_name);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::ServerInfo(grpc::CallbackServerContext* context,
                                                        const accllm::v1::ServerInfoRequest*,
                                                        accllm::v1::ServerInfoResponse* response) {
  response->set_version("0.2.0");
  const ServingState state = state_.load();
  response->set_draining(state == ServingState::kDraining);
  response->set_state(state == ServingState::kLoading   ? accllm::v1::LOADING
                      : state == ServingState::kServing ? accllm::v1::SERVING
                                                        : accllm::v1::DRAINING);
  const ServingRuntime* runtime = runtime_.load();
  if (runtime == nullptr) return Reply(context, absl::OkStatus());
  response->set_cpu_fallbacks(runtime->pool->fallbacks());
  for (const DevicePool::Device& d : runtime->pool->devices()) {
    const Scheduler::Load load = d.worker->scheduler().load();
    auto* device = response->add_devices();
    device->set_name(d.name);
    device->set_fallback(d.fallback);
    device->set_running(load.running);
    device->set_waiting(load.waiting);
    device->set_max_running(load.max_running);
    device->set_kv_pages_total(load.pages_total);
    device->set_kv_pages_reserved(load.reserved_pages);
    device->set_kv_pages_in_use(load.pages_in_use);
    device->set_healthy(load.healthy != 0);
  }
  return Reply(context, absl::OkStatus());
}

}  // namespace accllm::server
