// accllm-gateway in front of real daemons on loopback, spoken to over real HTTP: OpenAI's
// response shapes, streaming, errors, keys and limits, retries and placement across daemons, and
// a client that disconnects (its daemon stops and frees the pages).
#include "gateway/gateway.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/server_fixture.h"
#include "tests/test_certificates.h"

namespace accllm::gateway {
namespace {

using ::accllm::server::Server;
using ::accllm::server::ServerOptions;
using ::accllm::testing::RequireModelFile;
using ::testing::HasSubstr;
using nlohmann::json;
namespace v1 = ::accllm::v1;

struct HttpResult {
  int status = 0;
  json body;
  std::string raw;
  httplib::Headers headers;
};

// The events of an SSE body: each `data:` payload, [DONE] included.
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> out;
  for (absl::string_view block : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(block, "data: ")) << block;
    out.emplace_back(block.substr(6));
  }
  return out;
}

// A raw HTTP connection, for what a client library hides (leaving mid-stream).
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    // A gateway that never answers fails the test instead of hanging it.
    const timeval timeout{60, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~RawConnection() { Close(); }
  void Send(const std::string& bytes) { ASSERT_EQ(write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size())); }
  // Reads until `needle` has arrived (or the connection ends); returns everything read.
  std::string ReadUntil(const std::string& needle) {
    char buffer[4096];
    while (received_.find(needle) == std::string::npos) {
      const ssize_t n = read(fd_, buffer, sizeof buffer);
      if (n <= 0) break;
      received_.append(buffer, static_cast<std::size_t>(n));
    }
    return received_;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string received_;
};

std::string PostRequest(const std::string& path, const std::string& body) {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ",
                      body.size(), "\r\n\r\n", body);
}

class GatewayTest : public ::testing::Test {
 protected:
  static ServerOptions DaemonOptions(int max_running = 8, int max_waiting = 16) {
    return server::StoriesServerOptions("tok512.bin", max_waiting, max_running);
  }
  // stories260K with a long context: a request that runs for as long as a test needs it to.
  ServerOptions LongDaemonOptions(int max_running = 8, int max_waiting = 16) {
    ServerOptions options = DaemonOptions(max_running, max_waiting);
    options.model_path = server::WriteStretchedStories(scratch_ / "stories260K.bin", 4096);
    options.backend.kv_pages = 0;
    return options;
  }

  Server& StartDaemon(const ServerOptions& options) {
    auto server = Server::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    daemons_.push_back(std::move(*server));
    return *daemons_.back();
  }

  void StartGateway(GatewayOptions options = {}) {
    options.http.listen = "127.0.0.1:0";
    options.upstreams.retry_interval = std::chrono::milliseconds(100);
    if (options.upstreams.targets.empty()) {
      for (const auto& d : daemons_) options.upstreams.targets.push_back(absl::StrCat("127.0.0.1:", d->port()));
    }
    auto gateway = Gateway::Start(options);
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = std::move(*gateway);
    // Ready once every daemon is SERVING and its model known.
    for (int i = 0; i < 1000; ++i) {
      int ready = 0;
      for (const auto& u : gateway_->upstreams().Upstreams()) {
        ready += u->state() == Upstream::State::kServing && u->model().has_value();
      }
      if (ready == static_cast<int>(daemons_.size())) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "the gateway never saw its daemons serving";
  }

  HttpResult Call(const std::string& method, const std::string& path, const std::string& body = "",
                  httplib::Headers headers = {}) {
    httplib::Client client("127.0.0.1", gateway_->port());
    client.set_read_timeout(120, 0);
    httplib::Result r = method == "GET" ? client.Get(path.c_str(), headers)
                        : method == "OPTIONS" ? client.Options(path.c_str(), headers)
                                              : client.Post(path.c_str(), headers, body, "application/json");
    HttpResult out;
    if (!r) {
      ADD_FAILURE() << "no HTTP answer: " << httplib::to_string(r.error());
      return out;
    }
    out.status = r->status;
    out.raw = r->body;
    out.headers = r->headers;
    out.body = json::parse(r->body, nullptr, false);
    return out;
  }
  HttpResult Post(const std::string& path, const json& body, httplib::Headers headers = {}) {
    return Call("POST", path, body.dump(), std::move(headers));
  }

  // The daemon's own greedy text for `prompt`, over gRPC.
  std::string DaemonText(Server& daemon, const std::string& prompt, int n) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", daemon.port()), grpc::InsecureChannelCredentials());
    auto stub = v1::Generation::NewStub(channel);
    v1::GenerateRequest r;
    r.set_text(prompt);
    r.set_max_new_tokens(n);
    r.mutable_sampling()->set_temperature(0);
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, r);
    std::string text;
    v1::GenerateResponse response;
    while (reader->Read(&response)) text += response.chunk().text();
    EXPECT_TRUE(reader->Finish().ok());
    return text;
  }

  static v1::ServerInfoResponse Info(Server& daemon) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", daemon.port()), grpc::InsecureChannelCredentials());
    grpc::ClientContext context;
    v1::ServerInfoResponse info;
    EXPECT_TRUE(v1::Generation::NewStub(channel)->ServerInfo(&context, {}, &info).ok());
    return info;
  }
  static int Running(Server& daemon) { return Info(daemon).devices(0).running(); }
  static int Waiting(Server& daemon) { return Info(daemon).devices(0).waiting(); }
  static bool WaitFor(const std::function<bool()>& condition) {
    for (int i = 0; i < 3000; ++i) {
      if (condition()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  static bool Idle(Server& daemon) {
    const auto info = Info(daemon);
    for (const auto& d : info.devices()) {
      if (d.running() || d.waiting() || d.kv_pages_in_use() || d.kv_pages_reserved()) return false;
    }
    return true;
  }

  void TearDown() override {
    gateway_.reset();
    for (const auto& d : daemons_) {
      if (d->state() == server::ServingState::kServing) {
        EXPECT_TRUE(WaitFor([&] { return Idle(*d); })) << "a daemon still holds work: " << Info(*d).DebugString();
      }
    }
  }

  ::accllm::testing::ScratchDir scratch_;
  std::vector<std::unique_ptr<Server>> daemons_;
  std::unique_ptr<Gateway> gateway_;
};

const json kGreedy = {{"model", "stories260K"}, {"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 0}};

TEST_F(GatewayTest, CompletionIsTheDaemonsGreedyTextInOpenAisShape) {
  Server& daemon = StartDaemon(DaemonOptions());
  StartGateway();
  const HttpResult r = Post("/v1/completions", kGreedy);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_TRUE(absl::StartsWith(r.body["id"].get<std::string>(), "cmpl-"));
  EXPECT_EQ(r.body["model"], "stories260K");
  ASSERT_EQ(r.body["choices"].size(), 1u);
  EXPECT_EQ(r.body["choices"][0]["text"], DaemonText(daemon, "Once upon a time", 24));
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r.body["choices"][0]["logprobs"], nullptr);
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 24);
  EXPECT_EQ(r.body["usage"]["total_tokens"], r.body["usage"]["prompt_tokens"].get<int>() + 24);
}

TEST_F(GatewayTest, StreamedCompletionAddsUpToTheWholeOne) {
  StartDaemon(DaemonOptions());
  StartGateway();
  const std::string whole = Post("/v1/completions", kGreedy).body["choices"][0]["text"];
  json streamed = kGreedy;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const HttpResult r = Post("/v1/completions", streamed);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers.find("Content-Type")->second, "text/event-stream");
  const std::vector<std::string> events = Events(r.raw);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 24);
  std::string text;
  for (std::size_t i = 0; i + 2 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    text += chunk["choices"][0]["text"].get<std::string>();
    const bool last = i + 3 == events.size();
    EXPECT_EQ(chunk["choices"][0]["finish_reason"], last ? json("length") : json(nullptr)) << i;
  }
  EXPECT_EQ(text, whole);
}

TEST_F(GatewayTest, ChatStreamsTheRoleThenContentThenTheFinish) {
  StartDaemon(DaemonOptions());
  StartGateway();
  const json body = {{"model", "stories260K"},
                     {"messages", {{{"role", "user"}, {"content", "Lily"}}}},
                     {"max_tokens", 12},
                     {"temperature", 0}};
  const HttpResult whole = Post("/v1/chat/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.raw;
  EXPECT_EQ(whole.body["object"], "chat.completion");
  EXPECT_EQ(whole.body["choices"][0]["message"]["role"], "assistant");
  json streamed = body;
  streamed["stream"] = true;
  const std::vector<std::string> events = Events(Post("/v1/chat/completions", streamed).raw);
  ASSERT_GE(events.size(), 3u);
  const json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (std::size_t i = 1; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_FALSE(chunk["choices"][0]["delta"].contains("role"));
    if (chunk["choices"][0]["delta"].contains("content")) text += chunk["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(text, whole.body["choices"][0]["message"]["content"]);
}

// A greedy chat completion is `accllm generate` on the templated prompt (plain: the content).
TEST_F(GatewayTest, GreedyChatEqualsTheCliOnTheTemplatedPrompt) {
  StartDaemon(DaemonOptions());
  StartGateway();
  const HttpResult r = Post("/v1/chat/completions", {{"model", "stories260K"},
                                                     {"messages", {{{"role", "user"}, {"content", "Lily and Ben"}}}},
                                                     {"max_tokens", 30},
                                                     {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  const std::string command =
      absl::StrCat(ACCLLM_CLI_PATH, " generate -m ", RequireModelFile("stories260K.bin").string(), " -t ",
                   RequireModelFile("tok512.bin").string(), " -p 'Lily and Ben' -n 30 --temperature 0 --output text --engine cpu --kv f32");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  for (std::size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  ASSERT_EQ(pclose(pipe), 0) << out;
  EXPECT_EQ(out, absl::StrCat("Lily and Ben", r.body["choices"][0]["message"]["content"].get<std::string>(), "\n"));
}

TEST_F(GatewayTest, EchoWithLogprobsAndNoNewTokensScoresThePrompt) {
  Server& daemon = StartDaemon(DaemonOptions());
  StartGateway();
  const HttpResult r = Post("/v1/completions", {{"model", "stories260K"},
                                                {"prompt", "Once upon a time"},
                                                {"max_tokens", 0},
                                                {"echo", true},
                                                {"logprobs", 2}});
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& choice = r.body["choices"][0];
  EXPECT_EQ(choice["text"], "Once upon a time");
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), r.body["usage"]["prompt_tokens"].get<std::size_t>() - 1);  // BOS is not echoed
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 0);
  std::string joined;
  for (const json& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, " Once upon a time");
  for (std::size_t i = 0; i < lp["tokens"].size(); ++i) {
    ASSERT_TRUE(lp["token_logprobs"][i].is_number()) << i;  // conditioned on BOS, even the first
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 2u);
  }
  // Greedy text is the argmax: the prompt's scores agree with the tokens the model would pick.
  const std::string greedy = DaemonText(daemon, "Once upon a", 1);
  EXPECT_EQ(greedy, " time");
  EXPECT_TRUE(lp["top_logprobs"][3].contains(" time"));
  // Token ids: the first has nothing before it, so its logprob is null, as OpenAI's.
  const HttpResult ids = Post("/v1/completions", {{"model", "stories260K"},
                                                  {"prompt", {403, 407, 261}},
                                                  {"max_tokens", 0},
                                                  {"echo", true},
                                                  {"logprobs", 0}});
  ASSERT_EQ(ids.status, 200) << ids.raw;
  EXPECT_EQ(ids.body["choices"][0]["logprobs"]["token_logprobs"][0], nullptr);
  EXPECT_TRUE(ids.body["choices"][0]["logprobs"]["token_logprobs"][1].is_number());
  EXPECT_EQ(ids.body["choices"][0]["logprobs"]["tokens"].size(), 3u);
}

TEST_F(GatewayTest, NChoicesStopStringsAndSeeds) {
  StartDaemon(DaemonOptions());
  StartGateway();
  const json body = {{"model", "stories260K"}, {"prompt", "Once upon a time"}, {"max_tokens", 20},
                     {"temperature", 1.0},      {"n", 3},                         {"seed", 42}};
  const HttpResult a = Post("/v1/completions", body), b = Post("/v1/completions", body);
  ASSERT_EQ(a.status, 200) << a.raw;
  ASSERT_EQ(a.body["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.body["choices"][i]["index"], i);
    EXPECT_EQ(a.body["choices"][i]["text"], b.body["choices"][i]["text"]) << "the same seed, the same text";
  }
  EXPECT_NE(a.body["choices"][0]["text"], a.body["choices"][1]["text"]);
  const HttpResult stop = Post("/v1/completions", {{"model", "stories260K"}, {"prompt", "Once upon a time"},
                                                   {"max_tokens", 40}, {"temperature", 0}, {"stop", {"Lily"}}});
  EXPECT_EQ(stop.body["choices"][0]["text"], ", there was a little girl named ");
  EXPECT_EQ(stop.body["choices"][0]["finish_reason"], "stop");
}

TEST_F(GatewayTest, ErrorsAreOpenAisShapeAndStatus) {
  StartDaemon(DaemonOptions());
  GatewayOptions options;
  options.http.max_body_bytes = 4096;
  StartGateway(options);
  HttpResult r = Post("/v1/completions", {{"model", "gpt-4"}, {"prompt", "a"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body["error"]["code"], "model_not_found");
  r = Post("/v1/completions", {{"model", "stories260K"}, {"prompt", "a"}, {"temperature", "warm"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "temperature");
  EXPECT_EQ(r.body["error"]["type"], "invalid_request_error");
  r = Post("/v1/completions", {{"model", "stories260K"}, {"prompt", std::string(8000, 'a')}});
  EXPECT_EQ(r.status, 413);
  EXPECT_TRUE(r.body["error"]["message"].is_string());
  r = Call("GET", "/v1/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(r.body["error"]["message"].is_string());
  EXPECT_EQ(Call("GET", "/v1/completions").status, 405);
  // The daemon's own refusal (the prompt is longer than the context) comes back as a 400.
  r = Post("/v1/completions", {{"model", "stories260K"}, {"prompt", std::vector<int>(600, 300)}, {"max_tokens", 5}});
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_THAT(r.body["error"]["message"].get<std::string>(), HasSubstr("tokens"));
  // The gateway answers the next request on the same footing.
  EXPECT_EQ(Post("/v1/completions", kGreedy).status, 200);
}

TEST_F(GatewayTest, ModelsHealthAndMetrics) {
  StartDaemon(DaemonOptions());
  StartGateway();
  const HttpResult models = Call("GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.body["object"], "list");
  ASSERT_EQ(models.body["data"].size(), 1u);
  EXPECT_EQ(models.body["data"][0]["id"], "stories260K");
  EXPECT_EQ(models.body["data"][0]["context_length"], 512);
  const HttpResult one = Call("GET", "/v1/models/stories260K");
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(one.body["id"], "stories260K");
  EXPECT_EQ(Call("GET", "/v1/models/gpt-4").body["error"]["code"], "model_not_found");
  EXPECT_EQ(Call("GET", "/health").status, 200);
  ASSERT_EQ(Post("/v1/completions", kGreedy).status, 200);
  const HttpResult metrics = Call("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.raw, HasSubstr("accllm_gateway_requests_total{route=\"/v1/completions\",status=\"200\"} 1\n"));
  EXPECT_THAT(metrics.raw, HasSubstr("accllm_gateway_streams_open 0\n"));
  EXPECT_THAT(metrics.raw, HasSubstr("accllm_gateway_time_to_first_token_seconds_count 1\n"));
  ::accllm::testing::ScratchDir dir;
  ::accllm::testing::WriteFile(dir / "metrics.txt", metrics.raw);
  const std::string command =
      absl::StrCat("promtool check metrics <", (dir / "metrics.txt").string(), " >", (dir / "out.txt").string(), " 2>&1");
  EXPECT_EQ(std::system(command.c_str()), 0) << ::accllm::testing::ReadFile(dir / "out.txt");
}

TEST_F(GatewayTest, NoUpstreamUpMeans503) {
  GatewayOptions options;
  options.upstreams.targets = {"127.0.0.1:1"};  // nothing listens there
  options.http.listen = "127.0.0.1:0";
  auto gateway = Gateway::Start(options);
  ASSERT_TRUE(gateway.ok());
  gateway_ = std::move(*gateway);
  EXPECT_EQ(Call("GET", "/health").status, 503);
  const HttpResult r = Post("/v1/completions", kGreedy);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body["error"]["type"], "server_error");
}

TEST_F(GatewayTest, ApiKeysAndThePerKeyStreamLimit) {
  StartDaemon(LongDaemonOptions());
  GatewayOptions options;
  options.api_keys = {"key-a", "key-b"};
  options.max_streams_per_key = 1;
  StartGateway(options);
  HttpResult r = Post("/v1/completions", kGreedy);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body["error"]["code"], "invalid_api_key");
  EXPECT_EQ(Post("/v1/completions", kGreedy, {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(Call("GET", "/v1/models").status, 401);
  EXPECT_EQ(Call("GET", "/health").status, 200);  // probes need no key
  EXPECT_EQ(Post("/v1/completions", kGreedy, {{"Authorization", "Bearer key-a"}}).status, 200);

  // key-a holds one long stream; its second is refused, key-b's is not.
  RawConnection holder(gateway_->port());
  const json long_body = {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 4000},
                          {"ignore_eos", true},     {"stream", true}};
  holder.Send(absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-a\r\n"
                           "Content-Type: application/json\r\nContent-Length: ",
                           long_body.dump().size(), "\r\n\r\n", long_body.dump()));
  holder.ReadUntil("data: ");
  r = Post("/v1/completions", kGreedy, {{"Authorization", "Bearer key-a"}});
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.body["error"]["code"], "rate_limit_exceeded");
  EXPECT_TRUE(r.headers.count("Retry-After"));
  EXPECT_EQ(Post("/v1/completions", kGreedy, {{"Authorization", "Bearer key-b"}}).status, 200);
  holder.Close();
}

// The most reported bug of OpenAI-compatible servers: a client leaves mid-stream and the
// generation runs on. Here the daemon must stop and free every page.
TEST_F(GatewayTest, AClientThatLeavesCancelsItsGeneration) {
  Server& daemon = StartDaemon(LongDaemonOptions());
  StartGateway();
  for (const bool stream : {true, false}) {
    RawConnection client(gateway_->port());
    const json body = {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 4000},
                       {"ignore_eos", true},     {"stream", stream}};
    client.Send(PostRequest("/v1/completions", body.dump()));
    if (stream) {
      client.ReadUntil("data: ");
    } else {
      ASSERT_TRUE(WaitFor([&] { return Running(daemon) == 1; }));
    }
    client.Close();
    EXPECT_TRUE(WaitFor([&] { return Idle(daemon); })) << (stream ? "stream" : "whole response");
  }
  // The gateway learns of each cancelled call when its daemon says so, which may come after the
  // daemon freed the pages.
  EXPECT_TRUE(WaitFor([&] {
    return absl::StrContains(Call("GET", "/metrics").raw,
                             "accllm_gateway_requests_total{route=\"/v1/completions\",status=\"499\"} 2\n");
  }));
}

TEST_F(GatewayTest, RequestsGoToTheLeastBusyDaemonAndARefusalIsRetriedElsewhere) {
  Server& one = StartDaemon(LongDaemonOptions(/*max_running=*/1, /*max_waiting=*/1));
  Server& two = StartDaemon(LongDaemonOptions(1, 1));
  StartGateway();
  const json long_body = {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 4000},
                          {"ignore_eos", true},     {"stream", true}};
  RawConnection a(gateway_->port()), b(gateway_->port());
  a.Send(PostRequest("/v1/completions", long_body.dump()));
  a.ReadUntil("data: ");
  b.Send(PostRequest("/v1/completions", long_body.dump()));
  b.ReadUntil("data: ");
  // One stream on each daemon.
  EXPECT_EQ(Running(one), 1);
  EXPECT_EQ(Running(two), 1);
  // Both daemons run one and can queue one more: the next two wait, one on each.
  RawConnection c(gateway_->port()), d(gateway_->port());
  c.Send(PostRequest("/v1/completions", long_body.dump()));
  ASSERT_TRUE(WaitFor([&] { return Waiting(one) + Waiting(two) == 1; }));
  d.Send(PostRequest("/v1/completions", long_body.dump()));
  ASSERT_TRUE(WaitFor([&] { return Waiting(one) + Waiting(two) == 2; }));
  // Every slot is taken: the next is refused by both (tried, then retried) and gets 429.
  const HttpResult refused = Post("/v1/completions", kGreedy);
  EXPECT_EQ(refused.status, 429) << refused.raw;
  EXPECT_TRUE(refused.headers.count("Retry-After"));
  EXPECT_THAT(Call("GET", "/metrics").raw, HasSubstr("accllm_gateway_upstream_retries_total 1\n"));
  a.Close();
  b.Close();
  c.Close();
  d.Close();
}

TEST_F(GatewayTest, CorsOnlyWhenAllowed) {
  StartDaemon(DaemonOptions());
  GatewayOptions options;
  options.cors_origins = {"http://app.example"};
  StartGateway(options);
  HttpResult r = Call("OPTIONS", "/v1/chat/completions", "", {{"Origin", "http://app.example"}});
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.headers.find("Access-Control-Allow-Origin")->second, "http://app.example");
  EXPECT_THAT(r.headers.find("Access-Control-Allow-Headers")->second, HasSubstr("Authorization"));
  r = Call("GET", "/v1/models", "", {{"Origin", "http://evil.example"}});
  EXPECT_EQ(r.headers.count("Access-Control-Allow-Origin"), 0u);
}

// An error after the stream started cannot change the status: it is a `data: {"error": …}`
// event, which OpenAI's clients raise. A daemon that drains mid-stream is one such error; the
// gateway then sees it is no longer serving.
TEST_F(GatewayTest, AnErrorMidStreamIsAnErrorEvent) {
  Server& daemon = StartDaemon(LongDaemonOptions());
  StartGateway();
  RawConnection client(gateway_->port());
  const json body = {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 4000},
                     {"ignore_eos", true},     {"stream", true}};
  client.Send(PostRequest("/v1/completions", body.dump()));
  client.ReadUntil("data: ");
  std::thread drain([&] { daemon.Drain(0); });
  const std::string received = client.ReadUntil("\r\n0\r\n\r\n");
  drain.join();
  EXPECT_THAT(received, HasSubstr("data: {\"error\":{"));
  EXPECT_THAT(received, ::testing::Not(HasSubstr("[DONE]")));
  EXPECT_TRUE(WaitFor([&] { return Call("GET", "/health").status == 503; }));
  EXPECT_EQ(Post("/v1/completions", kGreedy).status, 503);
}

TEST_F(GatewayTest, HttpsToClientsAndMutualTlsToTheDaemons) {
  ::accllm::testing::TestCertificates certs;
  ASSERT_TRUE(certs.ok()) << certs.pem("openssl.log");
  ServerOptions daemon = DaemonOptions();
  daemon.tls = {certs.path("server.pem"), certs.path("server.key"), certs.path("ca.pem")};  // client certs required
  StartDaemon(daemon);
  GatewayOptions options;
  options.http.tls_cert_file = certs.path("server.pem");
  options.http.tls_key_file = certs.path("server.key");
  options.upstreams.tls = {true, certs.path("ca.pem"), certs.path("client.pem"), certs.path("client.key")};
  StartGateway(options);
  const std::string out = (scratch_ / "curl.json").string();
  const std::string curl = absl::StrCat("curl -s -o ", out, " -w '%{http_code}' --cacert ", certs.path("ca.pem"),
                                        " https://127.0.0.1:", gateway_->port(), "/v1/completions ",
                                        "-H 'Content-Type: application/json' -d '", kGreedy.dump(), "'");
  FILE* pipe = popen(curl.c_str(), "r");
  char code[8] = {};
  ASSERT_NE(fgets(code, sizeof code, pipe), nullptr);
  pclose(pipe);
  EXPECT_STREQ(code, "200");
  EXPECT_EQ(json::parse(::accllm::testing::ReadFile(out))["choices"][0]["finish_reason"], "length");
  // Plain HTTP on the HTTPS port gets no answer.
  httplib::Client plain("127.0.0.1", gateway_->port());
  EXPECT_FALSE(plain.Get("/health"));
  gateway_.reset();

  // Without its client certificate the gateway never sees the daemon serving.
  options.upstreams.tls.cert_file.clear();
  options.upstreams.tls.key_file.clear();
  options.http = {};
  options.http.listen = "127.0.0.1:0";
  options.upstreams.targets = {absl::StrCat("127.0.0.1:", daemons_[0]->port())};
  auto gateway = Gateway::Start(options);
  ASSERT_TRUE(gateway.ok());
  gateway_ = std::move(*gateway);
  // Its health watch ends refused (it would have said SERVING had the handshake passed).
  EXPECT_TRUE(WaitFor([&] {
    const auto upstreams = gateway_->upstreams().Upstreams();
    return !upstreams.empty() && upstreams[0]->state() == Upstream::State::kNotServing;
  }));
  EXPECT_EQ(Call("GET", "/health").status, 503);
  gateway_.reset();
  daemons_.clear();  // (the idle check after each test speaks plaintext gRPC)
}

// A DNS name stands for every address it resolves to (a Kubernetes headless Service).
TEST_F(GatewayTest, AnUpstreamByDnsName) {
  Server& daemon = StartDaemon(DaemonOptions());
  GatewayOptions options;
  options.upstreams.targets = {absl::StrCat("localhost:", daemon.port())};
  options.http.listen = "127.0.0.1:0";
  options.upstreams.retry_interval = std::chrono::milliseconds(100);
  auto gateway = Gateway::Start(options);
  ASSERT_TRUE(gateway.ok());
  gateway_ = std::move(*gateway);
  EXPECT_TRUE(WaitFor([&] { return !gateway_->upstreams().Models().empty(); }));
  bool found = false;
  for (const auto& u : gateway_->upstreams().Upstreams()) found |= u->address() == absl::StrCat("ipv4:127.0.0.1:", daemon.port());
  EXPECT_TRUE(found);
  EXPECT_EQ(Post("/v1/completions", kGreedy).status, 200);
  GatewayOptions bad;
  bad.upstreams.targets = {"no-port"};
  EXPECT_THAT(std::string(Gateway::Start(bad).status().message()), HasSubstr("host:port"));
}

// A model that ships a chat template (tokenizer_config.json beside its tokenizer): the daemon
// reports it and the gateway renders chats with the matching built-in.
TEST_F(GatewayTest, TheModelsOwnChatTemplate) {
  ServerOptions options = DaemonOptions();
  const std::filesystem::path dir = scratch_ / "with-template";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(options.tokenizer_path, dir / "tok512.bin");
  ::accllm::testing::WriteFile(dir / "tokenizer_config.json",
                               R"({"chat_template": "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"})");
  options.tokenizer_path = (dir / "tok512.bin").string();
  Server& daemon = StartDaemon(options);
  StartGateway();
  const auto models = gateway_->upstreams().Models();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_THAT(models[0].chat_template, HasSubstr("<|im_start|>"));
  const HttpResult chat = Post("/v1/chat/completions", {{"model", "stories260K"},
                                                        {"messages", {{{"role", "user"}, {"content", "Lily"}}}},
                                                        {"max_tokens", 10},
                                                        {"temperature", 0}});
  ASSERT_EQ(chat.status, 200) << chat.raw;
  EXPECT_EQ(chat.body["choices"][0]["message"]["content"],
            DaemonText(daemon, "<|im_start|>user\nLily<|im_end|>\n<|im_start|>assistant\n", 10));
}

}  // namespace
}  // namespace accllm::gateway
