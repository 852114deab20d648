#include "gateway/gateway.h"

#include <chrono>
#include <fstream>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gateway/openai_api.h"
#include "gateway/upstream_call.h"

namespace accllm::gateway {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr const char* kJson = "application/json";

std::string RandomId(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%s-%016x%08x", prefix, rng(), static_cast<uint32_t>(rng()));
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

ApiError Error(int http_status, std::string message, std::string type, std::string code = {}) {
  ApiError e;
  e.http_status = http_status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

// A daemon's refusal or failure, as OpenAI would have said it.
ApiError FromGrpc(const grpc::Status& status) {
  const std::string& m = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: return Error(400, m, "invalid_request_error");
    case grpc::StatusCode::NOT_FOUND: return Error(404, m, "invalid_request_error", "model_not_found");
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return Error(429, m, "requests", "rate_limit_exceeded");
    case grpc::StatusCode::UNAVAILABLE: return Error(503, m, "server_error", "service_unavailable");
    case grpc::StatusCode::DEADLINE_EXCEEDED: return Error(504, m, "server_error", "timeout");
    default: return Error(500, m.empty() ? "the upstream call failed" : m, "server_error");
  }
}

std::string Sse(const json& j) { return absl::StrCat("data: ", j.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n"); }
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadApiKeys(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the API key file ", path));
  std::vector<std::string> keys;
  for (std::string line; std::getline(in, line);) {
    const std::string key(absl::StripAsciiWhitespace(line));
    if (!key.empty() && key[0] != '#') keys.push_back(key);
  }
  if (keys.empty()) return absl::InvalidArgumentError(absl::StrCat("the API key file ", path, " holds no key"));
  return keys;
}

// One generation request: its calls (one per choice) and their streams merged into one response.
class Gateway::Request : public std::enable_shared_from_this<Gateway::Request> {
 public:
  Request(Gateway& gateway, std::shared_ptr<HttpExchange> exchange, ApiRequest api, std::string route, std::string key,
          ResponseMeta meta)
      : gateway_(gateway),
        exchange_(std::move(exchange)),
        api_(std::move(api)),
        route_(std::move(route)),
        key_(std::move(key)),
        meta_(std::move(meta)),
        results_(api_.calls.size()),
        choices_(api_.calls.size()),
        remaining_(static_cast<int>(api_.calls.size())) {
    gateway_.metrics_.streams_open().fetch_add(1);
  }

  ~Request() { Release(); }

  void Start() {
    std::shared_ptr<Request> self = shared_from_this();
    exchange_->OnClientGone([self] { self->CancelAll(); });
    std::vector<std::shared_ptr<UpstreamCall>> calls;
    for (std::size_t i = 0; i < api_.calls.size(); ++i) {
      UpstreamCall::Callbacks callbacks;
      callbacks.on_response = [self, i](const accllm::v1::GenerateResponse& r) { self->OnResponse(i, r); };
      callbacks.on_done = [self, i](const grpc::Status& s) { self->OnDone(i, s); };
      callbacks.on_retry = [self] { self->gateway_.metrics_.RecordRetry(); };
      std::shared_ptr<UpstreamCall> call = UpstreamCall::Start(*gateway_.pool_, api_.model, api_.calls[i].request,
                                                              std::move(callbacks));
      std::lock_guard<std::mutex> lock(mutex_);
      calls_.push_back(std::move(call));
      if (cancelled_) calls_.back()->Cancel();
    }
  }

 private:
  struct ChoiceStream {
    bool role_sent = false;
    bool echo_sent = false;
    bool done = false;
    int prompt_entries = 0;  // prompt logprob entries received (BOS included)
    int text_offset = 0;
  };

  // The request's share of the stream gauge and of its key's limit, given back before the last
  // byte goes out (a client may send its next request the moment it has the answer).
  void Release() {
    if (released_.exchange(true)) return;
    gateway_.metrics_.streams_open().fetch_sub(1);
    if (!key_.empty()) {
      std::lock_guard<std::mutex> lock(gateway_.keys_mutex_);
      if (--gateway_.streams_per_key_[key_] == 0) gateway_.streams_per_key_.erase(key_);
    }
  }

  void CancelAll() {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_ = true;
    for (const auto& c : calls_) c->Cancel();
  }

  const ChoiceCall& Call(std::size_t i) const { return api_.calls[i]; }

  // The prompt as echoed: its text, or for token ids the tokens' bytes.
  std::string EchoText(std::size_t i) const {
    if (Call(i).request.has_text()) return api_.echo_prompts[static_cast<std::size_t>(Call(i).prompt_index)];
    std::string out;
    for (const auto& lp : results_[i].prompt_logprobs) out += lp.sampled().token();
    return out;
  }

  // Under mutex_. Sends the stream's headers once.
  void EnsureStarted() {
    if (started_) return;
    started_ = true;
    status_ = 200;
    exchange_->StartStream(200, "text/event-stream", {{"X-Request-Id", meta_.id}});
  }

  // Under mutex_: the echo (prompt text and its logprobs) before a choice's first text.
  void SendEcho(std::size_t i) {
    ChoiceStream& c = choices_[i];
    if (!api_.echo || c.echo_sent) return;
    c.echo_sent = true;
    const std::string text = EchoText(i);
    const std::vector<accllm::v1::TokenLogprobs> none;
    exchange_->Send(Sse(CompletionChunk(api_, meta_, Call(i).index, text,
                                        api_.logprobs >= 0 ? results_[i].prompt_logprobs : none, none, 0, "", false)));
    c.text_offset = static_cast<int>(text.size());
  }

  void OnResponse(std::size_t i, const accllm::v1::GenerateResponse& r) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_ || cancelled_) return;
    ChoiceResult& result = results_[i];
    ChoiceStream& c = choices_[i];
    if (api_.stream) EnsureStarted();
    if (r.has_chunk()) {
      const accllm::v1::TokenChunk& chunk = r.chunk();
      for (const auto& lp : chunk.prompt_logprobs()) {
        // A text prompt's BOS is the daemon's, not part of the prompt the client sent.
        if (c.prompt_entries++ == 0 && Call(i).request.has_text()) continue;
        result.prompt_logprobs.push_back(lp);
      }
      if (chunk.prompt_logprobs_size() > 0 && chunk.text().empty() && chunk.logprobs_size() == 0) return;
      if (!first_token_seen_) {
        first_token_seen_ = true;
        gateway_.metrics_.RecordFirstToken(std::chrono::duration<double>(Clock::now() - arrived_).count());
      }
      result.text += chunk.text();
      const std::vector<accllm::v1::TokenLogprobs> logprobs(chunk.logprobs().begin(), chunk.logprobs().end());
      result.logprobs.insert(result.logprobs.end(), logprobs.begin(), logprobs.end());
      if (!api_.stream) return;
      SendEcho(i);
      SendRole(i);
      if (chunk.text().empty() && (api_.logprobs < 0 || logprobs.empty())) return;
      exchange_->Send(Sse(CompletionChunk(api_, meta_, Call(i).index, chunk.text(), {}, logprobs, c.text_offset, "", false)));
      c.text_offset += static_cast<int>(chunk.text().size());
      return;
    }
    if (!r.has_final()) return;
    const accllm::v1::FinalMessage& f = r.final();
    result.finish_reason = OpenAiFinishReason(f.finish_reason());
    result.prompt_tokens = f.usage().prompt_tokens();
    result.completion_tokens = f.usage().generated_tokens();
    if (result.finish_reason.empty()) {
      Fail(Error(500, f.error().empty() ? "the server cancelled the request" : f.error(), "server_error"));
      return;
    }
    c.done = true;
    if (!api_.stream) return;
    SendEcho(i);
    SendRole(i);
    exchange_->Send(Sse(CompletionChunk(api_, meta_, Call(i).index, "", {}, {}, c.text_offset, result.finish_reason, false)));
  }

  // Under mutex_: chat streams open each choice with a delta carrying the role.
  void SendRole(std::size_t i) {
    ChoiceStream& c = choices_[i];
    if (api_.endpoint != Endpoint::kChat || c.role_sent) return;
    c.role_sent = true;
    exchange_->Send(Sse(CompletionChunk(api_, meta_, Call(i).index, "", {}, {}, 0, "", true)));
  }

  // Under mutex_: the first error ends the request; the other calls are cancelled.
  void Fail(ApiError error) {
    if (error_) return;
    error_ = std::move(error);
    for (const auto& call : calls_) call->Cancel();
  }

  void OnDone(std::size_t i, const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!status.ok() && !choices_[i].done && !cancelled_) Fail(FromGrpc(status));
    if (status.ok() && !choices_[i].done && !error_ && !cancelled_) {
      Fail(Error(502, "the upstream stream ended without its final message", "server_error"));
    }
    if (--remaining_ > 0) return;
    Finish();
  }

  // Under mutex_, once every call has ended.
  void Finish() {
    Release();
    if (cancelled_) {
      status_ = 499;  // the client left (nginx's code for it)
    } else if (error_ && !started_) {
      status_ = error_->http_status;
    } else {
      status_ = 200;
    }
    // Counted before the last bytes go out: a client that reads its response and then scrapes
    // /metrics must find the request there.
    gateway_.metrics_.RecordRequest(route_, status_);
    gateway_.metrics_.RecordDuration(std::chrono::duration<double>(Clock::now() - arrived_).count());
    if (cancelled_) return;
    if (error_ && started_) {
      exchange_->Send(Sse(error_->ToJson()));  // OpenAI's clients raise it
      exchange_->EndStream();
    } else if (error_) {
      HttpHeaders headers;
      if (status_ == 429) headers.emplace_back("Retry-After", std::to_string(gateway_.options_.retry_after_seconds));
      exchange_->Respond(status_, kJson, Dump(error_->ToJson()), headers);
    } else if (api_.stream) {
      EnsureStarted();
      if (api_.include_usage) {
        int prompt = 0, completion = 0;
        std::vector<bool> counted(api_.echo_prompts.size(), false);
        for (std::size_t i = 0; i < results_.size(); ++i) {
          if (!counted[static_cast<std::size_t>(Call(i).prompt_index)]) prompt += results_[i].prompt_tokens;
          counted[static_cast<std::size_t>(Call(i).prompt_index)] = true;
          completion += results_[i].completion_tokens;
        }
        exchange_->Send(Sse(UsageChunk(api_, meta_, prompt, completion)));
      }
      exchange_->Send("data: [DONE]\n\n");
      exchange_->EndStream();
    } else {
      exchange_->Respond(200, kJson, Dump(CompletionResponse(api_, meta_, results_)), {{"X-Request-Id", meta_.id}});
    }
  }

  Gateway& gateway_;
  std::shared_ptr<HttpExchange> exchange_;
  ApiRequest api_;
  std::string route_;
  std::string key_;
  ResponseMeta meta_;
  Clock::time_point arrived_ = Clock::now();

  std::mutex mutex_;
  std::vector<std::shared_ptr<UpstreamCall>> calls_;  // guarded by mutex_
  std::vector<ChoiceResult> results_;                 // guarded by mutex_
  std::vector<ChoiceStream> choices_;                 // guarded by mutex_
  int remaining_;                                     // guarded by mutex_
  bool started_ = false;                              // guarded by mutex_
  bool cancelled_ = false;                            // guarded by mutex_
  bool first_token_seen_ = false;                     // guarded by mutex_
  int status_ = 0;                                    // guarded by mutex_
  std::optional<ApiError> error_;                     // guarded by mutex_
  std::atomic<bool> released_{false};
};

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Start(const GatewayOptions& options) {
  if (options.chat_template != "auto") {
    if (absl::Status s = ParseChatTemplateName(options.chat_template).status(); !s.ok()) return s;
  }
  std::unique_ptr<Gateway> gateway(new Gateway(options));
  absl::StatusOr<std::unique_ptr<UpstreamPool>> pool = UpstreamPool::Create(options.upstreams);
  if (!pool.ok()) return pool.status();
  gateway->pool_ = std::move(*pool);
  HttpServerOptions http = options.http;
  Gateway* g = gateway.get();
  http.extra_headers = [g](const HttpRequest& r) { return g->CorsHeaders(r); };
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start(http, [g](std::shared_ptr<HttpExchange> exchange) { g->Handle(exchange); });
  if (!server.ok()) return server.status();
  gateway->http_ = std::move(*server);
  return gateway;
}

Gateway::~Gateway() { Stop(); }

void Gateway::Stop() {
  if (http_) http_->Stop();  // closing the connections cancels their calls
  while (UpstreamCall::Open() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

HttpHeaders Gateway::CorsHeaders(const HttpRequest& request) const {
  const std::string origin = request.Header("origin");
  if (origin.empty() || options_.cors_origins.empty()) return {};
  const bool any = std::find(options_.cors_origins.begin(), options_.cors_origins.end(), "*") != options_.cors_origins.end();
  if (!any && std::find(options_.cors_origins.begin(), options_.cors_origins.end(), origin) == options_.cors_origins.end()) {
    return {};
  }
  return {{"Access-Control-Allow-Origin", any ? "*" : origin},
          {"Vary", "Origin"},
          {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
          {"Access-Control-Allow-Headers", "Authorization, Content-Type"},
          {"Access-Control-Max-Age", "600"}};
}

ChatTemplate Gateway::TemplateFor(const std::string& model) const {
  if (options_.chat_template != "auto") return *ParseChatTemplateName(options_.chat_template);
  for (const UpstreamModel& m : pool_->Models()) {
    if (m.name == model) return MatchChatTemplate(m.chat_template);
  }
  return ChatTemplate::kPlain;
}

bool Gateway::Authorize(const std::shared_ptr<HttpExchange>& exchange, const std::string& route, std::string* key) {
  if (options_.api_keys.empty()) return true;
  const std::string header = exchange->request().Header("authorization");
  std::string given;
  if (absl::StartsWithIgnoreCase(header, "bearer ")) given = std::string(absl::StripAsciiWhitespace(header.substr(7)));
  if (!given.empty() && std::find(options_.api_keys.begin(), options_.api_keys.end(), given) != options_.api_keys.end()) {
    *key = given;
    return true;
  }
  const ApiError e = Error(401,
                           given.empty() ? "You didn't provide an API key: send it as Authorization: Bearer <key>."
                                         : "Incorrect API key provided.",
                           "invalid_request_error", "invalid_api_key");
  metrics_.RecordRequest(route, 401);
  exchange->Respond(401, kJson, Dump(e.ToJson()), {{"WWW-Authenticate", "Bearer"}});
  return false;
}

void Gateway::Handle(const std::shared_ptr<HttpExchange>& exchange) {
  const HttpRequest& request = exchange->request();
  std::string path = request.target.substr(0, request.target.find('?'));
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  auto reply = [&](const std::string& route, int status, const std::string& type, std::string body) {
    metrics_.RecordRequest(route, status);
    exchange->Respond(status, type, std::move(body));
  };
  auto method_not_allowed = [&](const std::string& route) {
    reply(route, 405, kJson, Dump(Error(405, absl::StrCat("method ", request.method, " is not allowed on ", path),
                                        "invalid_request_error").ToJson()));
  };
  if (request.method == "OPTIONS") return reply("options", 204, "text/plain", "");
  if (path == "/health") {
    if (request.method != "GET") return method_not_allowed("/health");
    const bool up = pool_->AnyServing();
    return reply("/health", up ? 200 : 503, kJson, up ? R"({"status":"ok"})" : R"({"status":"no upstream is serving"})");
  }
  if (path == "/metrics") {
    if (request.method != "GET") return method_not_allowed("/metrics");
    return reply("/metrics", 200, "text/plain; version=0.0.4", metrics_.Render(*pool_));
  }
  if (path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) {
    const std::string route = path == "/v1/models" ? path : "/v1/models/{model}";
    if (request.method != "GET") return method_not_allowed(route);
    std::string key;
    if (!Authorize(exchange, route, &key)) return;
    return HandleModels(exchange, path == "/v1/models" ? "" : path.substr(std::string("/v1/models/").size()));
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (request.method != "POST") return method_not_allowed(path);
    return HandleGenerate(exchange, path, path == "/v1/chat/completions");
  }
  reply("unknown", 404, kJson,
        Dump(Error(404, absl::StrCat("Invalid URL (", request.method, " ", path, ")"), "invalid_request_error").ToJson()));
}

void Gateway::HandleModels(const std::shared_ptr<HttpExchange>& exchange, const std::string& id) {
  const auto entry = [](const UpstreamModel& m) {
    return json{{"id", m.name},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "accllm"},
                {"context_length", m.context_length},
                {"lambda_sinks", m.lambda_sinks},
                {"lambda_window", m.lambda_window}};
  };
  json data = json::array();
  for (const UpstreamModel& m : pool_->Models()) {
    if (id.empty()) {
      data.push_back(entry(m));
    } else if (m.name == id) {
      metrics_.RecordRequest("/v1/models/{model}", 200);
      return exchange->Respond(200, kJson, Dump(entry(m)));
    }
  }
  if (!id.empty()) {
    metrics_.RecordRequest("/v1/models/{model}", 404);
    return exchange->Respond(404, kJson, Dump(Error(404, absl::StrCat("The model `", id, "` does not exist."),
                                                    "invalid_request_error", "model_not_found")
                                                  .ToJson()));
  }
  metrics_.RecordRequest("/v1/models", 200);
  exchange->Respond(200, kJson, Dump({{"object", "list"}, {"data", data}}));
}

void Gateway::HandleGenerate(const std::shared_ptr<HttpExchange>& exchange, const std::string& route, bool chat) {
  std::string key;
  if (!Authorize(exchange, route, &key)) return;
  auto refuse = [&](const ApiError& e, HttpHeaders headers = {}) {
    metrics_.RecordRequest(route, e.http_status);
    exchange->Respond(e.http_status, kJson, Dump(e.ToJson()), headers);
  };
  // The body is read as JSON whatever its Content-Type says (curl -d sends a form type).
  const HttpRequest& request = exchange->request();
  const std::string id = RandomId(chat ? "chatcmpl" : "cmpl");
  // The model's chat template needs its name before the body is otherwise parsed.
  ParseContext context;
  context.request_id = id;
  if (chat) {
    const json peek = json::parse(request.body, nullptr, false);
    if (peek.is_object() && peek.contains("model") && peek["model"].is_string()) {
      context.chat_template = TemplateFor(peek["model"].get<std::string>());
    }
  }
  std::variant<ApiRequest, ApiError> parsed = ParseApiRequest(chat ? Endpoint::kChat : Endpoint::kCompletions,
                                                              request.body, context);
  if (std::holds_alternative<ApiError>(parsed)) return refuse(std::get<ApiError>(parsed));
  ApiRequest api = std::get<ApiRequest>(std::move(parsed));
  if (pool_->Pick(api.model) == nullptr) {
    if (!pool_->AnyServing()) return refuse(Error(503, "no upstream server is up", "server_error", "service_unavailable"));
    return refuse(Error(404, absl::StrCat("The model `", api.model, "` does not exist."), "invalid_request_error",
                        "model_not_found"));
  }
  if (!key.empty() && options_.max_streams_per_key > 0) {
    std::lock_guard<std::mutex> lock(keys_mutex_);
    if (streams_per_key_[key] >= options_.max_streams_per_key) {
      return refuse(Error(429, absl::StrCat("this key has ", options_.max_streams_per_key,
                                            " requests in flight, its limit; retry when one ends"),
                          "requests", "rate_limit_exceeded"),
                    {{"Retry-After", std::to_string(options_.retry_after_seconds)}});
    }
  }
  if (!key.empty()) {
    std::lock_guard<std::mutex> lock(keys_mutex_);
    ++streams_per_key_[key];
  }
  ResponseMeta meta{id, api.model, UnixSeconds()};
  std::make_shared<Request>(*this, exchange, std::move(api), route, key, std::move(meta))->Start();
}

}  // namespace accllm::gateway
