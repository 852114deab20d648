#include "server/generation_service.h"

#include <chrono>
#include <cmath>
#include <deque>
#include <optional>
#include <mutex>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_tsan_annotations.h"
#include "runtime/common/status_macros.h"
#include "runtime/tokenizer/utf8.h"
#include "server/status_mapping.h"

namespace accllm::server {
namespace {

using accllm::v1::GenerateRequest;
using accllm::v1::GenerateResponse;
using Clock = std::chrono::steady_clock;

// A time limit beyond this (about 11 days) is taken as this: far enough to mean "none", near
// enough that the clock arithmetic cannot overflow.
constexpr double kMaxTimeLimitSeconds = 1e6;

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
    // The request's time_limit_seconds and the call's gRPC deadline (max: none). The scheduler
    // stops at the earlier; which one it was decides how the call ends (see the proto).
    Clock::time_point time_limit = Clock::time_point::max();
    Clock::time_point call_deadline = Clock::time_point::max();
    std::optional<grpc::Status> end_status;  // the call ends with this status, no final message
  };

  ACCLLM_REACTOR_DESTRUCTOR ~GenerateReactor() override {}

  // Starts the call: once gRPC has bound it (see OnSendInitialMetadataDone), the prompt is
  // prepared (encoded, checked) on `executor`, then placed.
  GenerateReactor(const GenerationService& service, const ServingRuntime& runtime, CallExecutor& executor,
                  ServerMetrics& metrics, spdlog::logger& log, const GenerateRequest& proto, Clock::time_point arrived,
                  Clock::time_point call_deadline, std::shared_ptr<std::atomic<int>> open)
      : shared_(std::make_shared<Shared>()), open_(std::move(open)), executor_(executor) {
    open_->fetch_add(1);
    shared_->reactor = this;
    shared_->return_ids = proto.return_token_ids();
    shared_->return_logprobs = proto.return_logprobs();
    shared_->request_id = proto.request_id();
    shared_->tokenizer = runtime.tokenizer.get();
    shared_->metrics = &metrics;
    shared_->log = &log;
    shared_->pool = runtime.pool.get();
    shared_->cancel = std::make_shared<std::atomic<bool>>(false);
    shared_->arrived = arrived;
    shared_->call_deadline = call_deadline;
    place_ = [shared = shared_, &service, &runtime, proto] { Place(shared, service, runtime, proto); };
    HandedToGrpc(this);
    StartSendInitialMetadata();
  }

  // gRPC binds the call to this reactor after Generate returns. A write or Finish from another
  // thread that came before the bind would be kept and run by gRPC on its own thread, reading the
  // message the other thread wrote, in an order (an abseil mutex) that ThreadSanitizer cannot see:
  // Debian's abseil is not built with it. The headers' completion comes after the bind, so no
  // work starts before it.
  void OnSendInitialMetadataDone(bool ok) override {
    CalledBackByGrpc(this);
    if (!ok) return Refuse(*shared_, absl::CancelledError("the client went away"));
    if (!executor_.Post(std::move(place_))) Refuse(*shared_, absl::UnavailableError("the server is shutting down"));
  }

  // Prepares the request and hands it to the device pool, or ends the call with the reason.
  static void Place(const std::shared_ptr<Shared>& shared, const GenerationService& service,
                    const ServingRuntime& runtime, const GenerateRequest& proto) {
    if (service.state() == ServingState::kDraining) {
      return Refuse(*shared, absl::UnavailableError("the server is draining; retry on another replica"));
    }
    if (shared->cancel->load()) return Refuse(*shared, absl::CancelledError("the client cancelled the call"));
    absl::StatusOr<ScheduledRequest> request = service.ToScheduledRequest(runtime, proto);
    if (!request.ok()) return Refuse(*shared, request.status());
    request->cancel = shared->cancel;
    request->on_event = [shared](const StreamEvent& e) { Push(shared, e); };
    // Held across placement so that no event is handled (and no write started) before the
    // outcome of placement is known.
    std::unique_lock<std::mutex> lock(shared->mutex);
    shared->time_limit = request->deadline;
    request->deadline = std::min(request->deadline, shared->call_deadline);
    absl::StatusOr<std::string> placed = shared->pool->Submit(*std::move(request));
    if (!placed.ok()) {
      lock.unlock();
      Refuse(*shared, placed.status());
    }
  }

  // Ends a call that never reached a device.
  static void Refuse(Shared& shared, const absl::Status& status) {
    GenerateReactor* reactor = nullptr;
    {
      std::lock_guard<std::mutex> lock(shared.mutex);
      shared.finished = true;
      reactor = shared.reactor;
    }
    LogRefusal(shared.request_id, status, *shared.metrics, *shared.log);
    reactor->EndCall(ToGrpcStatus(status));
  }

  static void LogRefusal(const std::string& request_id, const absl::Status& status, ServerMetrics& metrics,
                         spdlog::logger& log) {
    metrics.RecordRefused(status.code());
    log.info("refused id=\"{}\" code={} message=\"{}\"", absl::CHexEscape(request_id),
             absl::StatusCodeToString(status.code()), absl::CHexEscape(status.message()));
  }

  void OnWriteDone(bool ok) override {
    CalledBackByGrpc(this);
    std::unique_lock<std::mutex> lock(shared_->mutex);
    if (!ok) {  // the client is gone
      shared_->queue.clear();
      shared_->writing = false;
      shared_->finished = true;
      lock.unlock();
      CancelRequest();
      EndCall(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    const bool was_final = shared_->queue.front().has_final();
    shared_->queue.pop_front();
    if (was_final) {
      shared_->writing = false;
      shared_->finished = true;
      lock.unlock();
      EndCall(grpc::Status::OK);
      return;
    }
    if (shared_->queue.empty()) {
      shared_->writing = false;
      if (shared_->end_status) {
        shared_->finished = true;
        const grpc::Status status = *shared_->end_status;
        lock.unlock();
        EndCall(status);
      }
      return;
    }
    HandedToGrpc(this);
    StartWrite(&shared_->queue.front());  // under the lock: see Push
  }

  // gRPC runs OnDone only after OnCancel has returned, but possibly on another thread, and the
  // order is kept in its uninstrumented core: the release tells ThreadSanitizer that OnDone's
  // delete comes after CancelRequest's reads.
  void OnCancel() override {
    CalledBackByGrpc(this);
    CancelRequest();
    HandedToGrpc(this);
  }

  void OnDone() override {
    CalledBackByGrpc(this);
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->reactor = nullptr;
    }
    open_->fetch_sub(1);
    Unref();
  }

 private:
  // Finish, then let go of this reactor: it is deleted by whichever of this and OnDone comes
  // last, so that Finish's own reads of the reactor are ordered before the delete in a way
  // ThreadSanitizer sees too.
  void EndCall(const grpc::Status& status) {
    HandedToGrpc(this);
    Finish(status);
    Unref();
  }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Ends the request at its device's next step (the flag follows it if it moves).
  void CancelRequest() {
    shared_->cancel->store(true);
    shared_->pool->WakeAll();
  }

  static void AddLogprobs(const Shared& shared, int token, const TokenLogprobs& logprobs,
                          google::protobuf::RepeatedPtrField<accllm::v1::TokenLogprobs>& out) {
    auto set = [&](accllm::v1::TokenLogprob* entry, int id, float logprob) {
      entry->set_token_id(id);
      entry->set_token(shared.tokenizer->TokenBytes(id));
      entry->set_logprob(logprob);
    };
    accllm::v1::TokenLogprobs* lp = out.Add();
    set(lp->mutable_sampled(), token, logprobs.logprob);
    for (const TokenLogprobs::Alternative& alt : logprobs.top) set(lp->add_top(), alt.token, alt.logprob);
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
    if (!e.prompt_logprobs.empty()) {
      GenerateResponse chunk;
      for (const PromptTokenLogprob& p : e.prompt_logprobs) {
        AddLogprobs(*shared, p.token, p.logprobs, *chunk.mutable_chunk()->mutable_prompt_logprobs());
      }
      shared->queue.push_back(std::move(chunk));
    }
    if (e.token >= 0 && (!e.text.empty() || shared->return_ids || shared->return_logprobs)) {
      GenerateResponse chunk;
      chunk.mutable_chunk()->set_text(e.text);
      if (shared->return_ids) chunk.mutable_chunk()->add_token_ids(e.token);
      if (shared->return_logprobs && e.logprobs) AddLogprobs(*shared, e.token, *e.logprobs, *chunk.mutable_chunk()->mutable_logprobs());
      shared->queue.push_back(std::move(chunk));
    }
    if (e.finish && *e.finish == FinishReason::kTimeLimit && shared->call_deadline <= shared->time_limit) {
      // The call's deadline, not the request's time limit: the call ends with DEADLINE_EXCEEDED
      // and no final message, as it would have had the client's own timer fired first.
      shared->end_status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the call's deadline passed");
      shared->final_queued = true;
      if (!shared->writing && shared->queue.empty()) {
        shared->finished = true;
        GenerateReactor* reactor = shared->reactor;
        const grpc::Status status = *shared->end_status;
        lock.unlock();
        reactor->EndCall(status);
        return;
      }
    } else if (e.finish) {
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
    // Under the lock: StartWrite serializes the message here, and OnWriteDone (which frees it)
    // takes this lock first, so the order gRPC guarantees is one ThreadSanitizer can see too.
    // gRPC never runs OnWriteDone inline from StartWrite, so this cannot deadlock.
    HandedToGrpc(shared->reactor);
    shared->reactor->StartWrite(&shared->queue.front());
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
        absl::CHexEscape(shared.request_id), e.device, FinishReasonLabel(done.reason), done.prompt_tokens, done.generated_tokens,
        done.queue_seconds * 1e3, started ? done.time_to_first_token_seconds * 1e3 : 0.0, decode * 1e3,
        done.total_seconds * 1e3, decode > 0 ? (done.generated_tokens - 1) / decode : 0.0,
        e.error.ok() ? "" : " error=", e.error.ok() ? "" : absl::CHexEscape(e.error.message()));
  }

  std::shared_ptr<Shared> shared_;
  std::shared_ptr<std::atomic<int>> open_;
  CallExecutor& executor_;
  std::function<void()> place_;  // posted to executor_ once the call is bound
  std::atomic<int> refs_{2};     // one for EndCall, one for OnDone
};

// A stream refused before any work: it ends with the status and no messages.
class RefusedStream final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  explicit RefusedStream(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
    HandedToGrpc(this);
  }
  ACCLLM_REACTOR_DESTRUCTOR ~RefusedStream() override {}
  void OnDone() override {
    CalledBackByGrpc(this);
    delete this;
  }
};

// A unary call answered by `task` on the call executor, posted once gRPC has bound the call (see
// GenerateReactor::OnSendInitialMetadataDone). Deleted by whichever of EndCall and OnDone comes
// last (see GenerateReactor::EndCall).
class ExecutorUnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  ExecutorUnaryReactor(CallExecutor& executor, std::function<grpc::Status()> task)
      : executor_(executor), task_(std::move(task)) {
    HandedToGrpc(this);
    StartSendInitialMetadata();
  }
  void OnSendInitialMetadataDone(bool ok) override {
    CalledBackByGrpc(this);
    if (!ok) return EndCall(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    if (!executor_.Post([this] { EndCall(task_()); })) {
      EndCall(ToGrpcStatus(absl::UnavailableError("the server is shutting down")));
    }
  }
  void OnDone() override {
    CalledBackByGrpc(this);
    Unref();
  }

 private:
  void EndCall(const grpc::Status& status) {
    HandedToGrpc(this);
    Finish(status);
    Unref();
  }

  ACCLLM_REACTOR_DESTRUCTOR ~ExecutorUnaryReactor() override {}
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  CallExecutor& executor_;
  std::function<grpc::Status()> task_;
  std::atomic<int> refs_{2};
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
    : options_(options), metrics_(metrics), log_(std::move(log)), executor_(kPrepareThreads) {}

void GenerationService::Shutdown() {
  state_.store(ServingState::kDraining);
  executor_.Stop();
}

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
  return absl::NotFoundError(absl::StrCat("unknown model '", absl::CHexEscape(name.substr(0, 128)),
                                          name.size() > 128 ? "...' " : "' ", "(this server serves '", options_.model_name, "')"));
}

absl::Status GenerationService::CheckGenerateRequest(const ServingRuntime& runtime, const GenerateRequest& r) const {
  RETURN_IF_ERROR(CheckModel(r.model()));
  switch (r.prompt_case()) {
    case GenerateRequest::kText:
      RETURN_IF_ERROR(CheckTextLength(runtime, r.text(), "prompt"));
      if (!IsValidUtf8(r.text())) return absl::InvalidArgumentError("the prompt text is not valid UTF-8");
      break;
    case GenerateRequest::kTokenIds:
      if (r.token_ids().ids().empty()) return absl::InvalidArgumentError("token_ids is empty");
      if (r.token_ids().ids_size() > MaxPromptTokens(runtime)) {
        return absl::InvalidArgumentError(
            absl::StrCat("the prompt has ", r.token_ids().ids_size(), " tokens; the limit is ", MaxPromptTokens(runtime)));
      }
      break;
    default:
      return absl::InvalidArgumentError("a prompt (text or token_ids) is required");
  }
  if (r.max_new_tokens() < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  // NaN fails every comparison, so the test is written to let only finite values >= 0 through.
  if (!(r.time_limit_seconds() >= 0) || std::isinf(r.time_limit_seconds())) {
    return absl::InvalidArgumentError(absl::StrCat("time_limit_seconds must be a finite number >= 0 (0: none), got ",
                                                   r.time_limit_seconds()));
  }
  if (r.top_logprobs() != 0 && !r.return_logprobs() && !r.return_prompt_logprobs()) {
    return absl::InvalidArgumentError("top_logprobs needs return_logprobs or return_prompt_logprobs");
  }
  if (r.stop_size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat(r.stop_size(), " stop strings given; at most ", kMaxStopStrings));
  }
  for (const std::string& stop : r.stop()) {
    if (stop.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("a stop string has ", stop.size(), " bytes; at most ", kMaxStopStringBytes));
    }
  }
  if (r.stop_token_ids_size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.stop_token_ids_size(), " stop token ids given; at most ", kMaxStopTokenIds));
  }
  return absl::OkStatus();
}

int GenerationService::MaxPromptTokens(const ServingRuntime& runtime) const {
  return options_.max_prompt_tokens > 0 ? options_.max_prompt_tokens : runtime.model.config().max_seq_len - 1;
}

absl::Status GenerationService::CheckTextLength(const ServingRuntime& runtime, const std::string& text,
                                                const char* what) const {
  // No token stands for more than max_token_bytes bytes of text, so a longer text cannot fit in
  // the token limit: refused before any encoding work.
  const int64_t limit = (int64_t{MaxPromptTokens(runtime)} + 1) * runtime.max_token_bytes;
  if (static_cast<int64_t>(text.size()) > limit) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, " has ", text.size(), " bytes; at most ", limit,
                                                   " can fit in ", MaxPromptTokens(runtime), " tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ScheduledRequest> GenerationService::ToScheduledRequest(const ServingRuntime& runtime,
                                                                       const GenerateRequest& r) const {
  RETURN_IF_ERROR(CheckGenerateRequest(runtime, r));
  ScheduledRequest out;
  if (r.prompt_case() == GenerateRequest::kText) {
    ASSIGN_OR_RETURN(out.prompt_ids, runtime.tokenizer->Encode(r.text(), /*add_bos=*/true));
  } else {
    out.prompt_ids.assign(r.token_ids().ids().begin(), r.token_ids().ids().end());
  }
  if (static_cast<int>(out.prompt_ids.size()) > MaxPromptTokens(runtime)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", out.prompt_ids.size(), " tokens; the limit is ", MaxPromptTokens(runtime)));
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
  o.logprobs = r.return_logprobs() || r.return_prompt_logprobs() ? r.top_logprobs() : -1;
  out.prompt_logprobs = r.return_prompt_logprobs();
  out.prompt_only = r.prompt_only();
  if (out.prompt_only) o.max_new_tokens = 1;  // room that is never used: nothing is sampled
  out.priority = r.priority();
  if (r.time_limit_seconds() > 0) {
    out.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                                      std::min(r.time_limit_seconds(), kMaxTimeLimitSeconds)));
  }
  return out;
}

grpc::ServerWriteReactor<GenerateResponse>* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                                        const GenerateRequest* request) {
  const Clock::time_point arrived = Clock::now();
  absl::StatusOr<const ServingRuntime*> runtime = Runtime();
  const absl::Status checked = !runtime.ok() ? runtime.status()
                               : state_.load() == ServingState::kDraining
                                   ? absl::UnavailableError("the server is draining; retry on another replica")
                                   : CheckGenerateRequest(**runtime, *request);
  if (checked.ok()) {
    Clock::time_point call_deadline = Clock::time_point::max();
    const auto deadline = context->deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      call_deadline = arrived + std::chrono::duration_cast<Clock::duration>(deadline - std::chrono::system_clock::now());
    }
    return new GenerateReactor(*this, **runtime, executor_, metrics_, *log_, *request, arrived, call_deadline,
                               open_streams_);
  }
  GenerateReactor::LogRefusal(request->request_id(), checked, metrics_, *log_);
  return new RefusedStream(checked);
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const accllm::v1::TokenizeRequest* request,
                                                      accllm::v1::TokenizeResponse* response) {
  absl::StatusOr<const ServingRuntime*> runtime = Runtime();
  if (!runtime.ok()) return Reply(context, runtime.status());
  if (absl::Status s = CheckModel(request->model()); !s.ok()) return Reply(context, s);
  if (absl::Status s = CheckTextLength(**runtime, request->text(), "text"); !s.ok()) return Reply(context, s);
  if (!IsValidUtf8(request->text())) return Reply(context, absl::InvalidArgumentError("the text is not valid UTF-8"));
  const Tokenizer& tokenizer = *(*runtime)->tokenizer;
  return new ExecutorUnaryReactor(executor_, [&tokenizer, request, response] {
    absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(request->text(), request->add_bos());
    if (!ids.ok()) return ToGrpcStatus(ids.status());
    for (int id : *ids) {
      response->add_ids(id);
      response->add_pieces(tokenizer.TokenBytes(id));
    }
    return grpc::Status::OK;
  });
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
  response->set_chat_template((*runtime)->chat_template);
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
  response->set_version(ACCLLM_VERSION);
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
    device->set_full_length_streams(load.full_length_streams);
    device->set_tokens_processed(load.tokens_processed);
  }
  return Reply(context, absl::OkStatus());
}

}  // namespace accllm::server
