// The server as operators meet it: health through loading, serving and draining; the metrics
// endpoint (checked by Prometheus' own promtool); TLS and mutual TLS; several devices; queue-full
// refusal; cancellation during prefill; logprobs; the binary with a config file and SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <regex>
#include <set>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "runtime/model/load_model.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/quantize_model.h"
#include "tests/server_fixture.h"
#include "tests/test_certificates.h"

extern char** environ;

namespace accllm::server {
namespace {

using ::accllm::testing::ReadFile;
using ::accllm::testing::Shell;
using ::accllm::testing::TestCertificates;
using ::accllm::testing::ScratchDir;
using ::accllm::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;
using HealthStatus = grpc::health::v1::HealthCheckResponse;


TEST_F(ServerTest, HealthFollowsLoadingServingAndDraining) {
  ServerOptions options = Options("tok512.bin");
  options.metrics_listen = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(server_, Server::Listen(options));
  Connect();
  httplib::Client http("127.0.0.1", server_->metrics_port());

  // Loading: listening, but nothing that needs the model is served.
  EXPECT_EQ(Health(), HealthStatus::NOT_SERVING);
  EXPECT_EQ(Info().state(), v1::LOADING);
  EXPECT_EQ(http.Get("/healthz")->status, 503);
  Streamed early = Generate(Greedy("hi", 3));
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(early.status.error_message(), HasSubstr("loading"));
  {
    grpc::ClientContext context;
    v1::ModelInfoResponse info;
    EXPECT_EQ(stub_->ModelInfo(&context, {}, &info).error_code(), grpc::StatusCode::UNAVAILABLE);
  }

  ASSERT_OK(server_->Load());
  EXPECT_EQ(Health(), HealthStatus::SERVING);
  EXPECT_EQ(Info().state(), v1::SERVING);
  EXPECT_EQ(http.Get("/healthz")->status, 200);

  // Draining: a running stream finishes; health flips at once; new streams are refused.
  grpc::ClientContext context;
  v1::GenerateRequest long_request = Greedy("Once upon a time", 200);
  long_request.set_ignore_eos(true);
  auto reader = stub_->Generate(&context, long_request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  std::thread drain([&] { server_->Drain(30.0); });
  for (int i = 0; i < 500 && server_->state() != ServingState::kDraining; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(Health(), HealthStatus::NOT_SERVING);
  Streamed refused = Generate(Greedy("hi", 3));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("draining"));
  v1::FinalMessage final;
  while (reader->Read(&response)) {
    if (response.has_final()) final = response.final();
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(final.finish_reason(), v1::MAX_TOKENS);
  EXPECT_EQ(final.usage().generated_tokens(), 200);
  drain.join();
}

TEST_F(ServerTest, DrainEndsStreamsThatOutliveTheGracePeriod) {
  // A stream of 4000 tokens: stories260K's own 512-token context let a fast engine finish the
  // stream inside the grace period.
  StartServer(StretchedOptions());
  grpc::ClientContext context;
  v1::GenerateRequest r = Greedy("Once upon a time", 4000);
  r.set_ignore_eos(true);
  auto reader = stub_->Generate(&context, r);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  server_->Drain(0.05);
  v1::FinalMessage final;
  while (reader->Read(&response)) {
    if (response.has_final()) final = response.final();
  }
  reader->Finish();
  EXPECT_EQ(final.finish_reason(), v1::CANCELLED);
}

TEST_F(ServerTest, MetricsEndpointPassesPromtool) {
  ServerOptions options = Options("tok512.bin");
  options.metrics_listen = "127.0.0.1:0";
  StartServer(options);
  ASSERT_TRUE(Generate(Greedy("Once upon a time", 20)).status.ok());
  v1::GenerateRequest bad = Greedy("hi", 3);
  bad.set_model("nope");
  EXPECT_EQ(Generate(bad).status.error_code(), grpc::StatusCode::NOT_FOUND);

  httplib::Client http("127.0.0.1", server_->metrics_port());
  auto got = http.Get("/metrics");
  ASSERT_TRUE(got) << "no answer from /metrics";
  ASSERT_EQ(got->status, 200);
  const std::string& text = got->body;
  EXPECT_THAT(text, HasSubstr("accllm_requests_total{finish_reason=\"max_tokens\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("accllm_requests_refused_total{code=\"not_found\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("accllm_generated_tokens_total 20\n"));
  EXPECT_THAT(text, HasSubstr("accllm_time_to_first_token_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("accllm_inter_token_latency_seconds_count 19\n"));
  EXPECT_THAT(text, HasSubstr("accllm_kv_pages_capacity{device=\"cpu:0\",fallback=\"true\"} 256\n"));
  EXPECT_THAT(text, HasSubstr("accllm_server_state{state=\"serving\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("accllm_placement_policy{policy=\"when-full\"} 1\n"));

  ScratchDir dir;
  WriteFile(dir / "metrics.txt", text);
  const std::string command = absl::StrCat("promtool check metrics <", (dir / "metrics.txt").string(), " >",
                                           (dir / "promtool.txt").string(), " 2>&1");
  EXPECT_EQ(Shell(command), 0) << "promtool (Debian package prometheus) refused the metrics:\n"
                               << ReadFile(dir / "promtool.txt");
}

TEST_F(ServerTest, LogprobsComeFromTheModelsDistribution) {
  StartServer("tok512.bin");
  v1::GenerateRequest r = Greedy("Once upon a time", 8);
  r.set_return_logprobs(true);
  r.set_top_logprobs(3);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, r);
  v1::GenerateResponse response;
  int tokens = 0;
  while (reader->Read(&response)) {
    if (!response.has_chunk()) continue;
    ASSERT_EQ(response.chunk().logprobs_size(), response.chunk().token_ids_size());
    for (int i = 0; i < response.chunk().logprobs_size(); ++i) {
      const v1::TokenLogprobs& lp = response.chunk().logprobs(i);
      ++tokens;
      ASSERT_EQ(lp.top_size(), 3);
      // Greedy: the sampled token is the likeliest.
      EXPECT_EQ(lp.sampled().token_id(), response.chunk().token_ids(i));
      EXPECT_EQ(lp.top(0).token_id(), lp.sampled().token_id());
      EXPECT_FLOAT_EQ(lp.top(0).logprob(), lp.sampled().logprob());
      EXPECT_LE(lp.sampled().logprob(), 0.0f);
      EXPECT_GE(lp.top(0).logprob(), lp.top(1).logprob());
      EXPECT_GE(lp.top(1).logprob(), lp.top(2).logprob());
      EXPECT_LT(std::exp(lp.top(0).logprob()) + std::exp(lp.top(1).logprob()) + std::exp(lp.top(2).logprob()), 1.0001);
      EXPECT_FALSE(lp.sampled().token().empty());
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 8);

  r.set_top_logprobs(21);
  EXPECT_EQ(Generate(r).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  r.set_top_logprobs(2);
  r.set_return_logprobs(false);
  EXPECT_EQ(Generate(r).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, FullQueueRefusesWithResourceExhausted) {
  StartServer(StretchedOptions(/*max_waiting=*/1, /*max_running=*/1));  // streams that outlast the cancel
  v1::GenerateRequest long_request = Greedy("Once upon a time", 4000);
  long_request.set_ignore_eos(true);
  const int64_t before = TokensProcessed();
  grpc::ClientContext running_context, waiting_context;
  auto running = stub_->Generate(&running_context, long_request);
  v1::GenerateResponse response;
  ASSERT_TRUE(running->Read(&response));  // admitted and streaming
  auto waiting = stub_->Generate(&waiting_context, long_request);
  for (int i = 0; i < 500 && Info().devices(0).waiting() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(Info().devices(0).waiting(), 1);

  const Streamed refused = Generate(Greedy("hi", 3));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("queue is full"));

  running_context.TryCancel();
  waiting_context.TryCancel();
  while (running->Read(&response)) {
  }
  while (waiting->Read(&response)) {
  }
  EXPECT_EQ(running->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(waiting->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectStoppedShort(before, 4000, "cancel");  // both let go of; the running one stopped short
}

// Cancels and deadlines are checked on the server's side, not only in the codes the client
// library makes up: the request's pages come back, the device spends no further step on it, and
// the server counts it.
TEST_F(ServerTest, CancelAndDeadlineDuringPrefill) {
  // A 4,000-token prompt read one token per step: the request is still in its prefill whenever
  // the client acts, however loaded the machine.
  ServerOptions options = StretchedOptions();
  options.scheduler.prefill_chunk = 1;
  options.metrics_listen = "127.0.0.1:0";
  StartServer(options);
  const int kPrompt = 4000;
  v1::GenerateRequest r = LongPrompt(kPrompt, 5);
  httplib::Client http("127.0.0.1", server_->metrics_port());
  const auto metric = [&](const std::string& line) {
    auto got = http.Get("/metrics");
    return got ? got->body.find(line) != std::string::npos : false;
  };
  const auto wait_started = [&](int64_t before) {
    for (int i = 0; i < 1000 && TokensProcessed() == before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };
  {
    const int64_t before = TokensProcessed();
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, r);
    wait_started(before);
    context.TryCancel();
    v1::GenerateResponse response;
    int chunks = 0;
    while (reader->Read(&response)) chunks += response.has_chunk();
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_EQ(chunks, 0);
    ExpectStoppedShort(before, kPrompt, "cancel");
    EXPECT_TRUE(metric("accllm_requests_total{finish_reason=\"cancelled\"} 1\n"));
  }
  {
    // time_limit_seconds: a final message, TIME_LIMIT, status OK.
    const int64_t before = TokensProcessed();
    r.set_time_limit_seconds(0.005);
    const Streamed s = Generate(r);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.final.finish_reason(), v1::TIME_LIMIT);
    EXPECT_EQ(s.final.usage().generated_tokens(), 0);
    ExpectStoppedShort(before, kPrompt, "time limit");
  }
  {
    // The call's deadline: DEADLINE_EXCEEDED and no final message, never a TIME_LIMIT message,
    // even with a time limit a little later than the deadline.
    const int64_t before = TokensProcessed();
    r.set_time_limit_seconds(0.05);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(5));
    auto reader = stub_->Generate(&context, r);
    v1::GenerateResponse response;
    int finals = 0;
    while (reader->Read(&response)) finals += response.has_final();
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_EQ(finals, 0);
    ExpectStoppedShort(before, kPrompt, "deadline");
  }
}

TEST_F(ServerTest, DevicePoolSpreadsStreamsOverDevices) {
  ServerOptions options = Options("tok512.bin", /*max_waiting=*/16, /*max_running=*/2);
  options.devices.devices = "cpu:2";
  options.backend.threads = 1;
  StartServer(options);
  ASSERT_EQ(Info().devices_size(), 2);
  // Six streams opened back to back before any is read, each long enough (200 tokens, several ms
  // even here) that the server holds them together: the least-loaded device takes each new one.
  // (Client threads started one by one could each finish before the next arrived.)
  constexpr int kStreams = 6;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->Generate(contexts.back().get(), Greedy("Once upon a time", 200)));
  }
  std::set<std::string> devices;
  std::vector<int> first_ids;
  for (auto& reader : readers) {
    v1::GenerateResponse response;
    std::vector<int> ids;
    while (reader->Read(&response)) {
      if (response.has_final()) devices.insert(response.final().device());
      ids.insert(ids.end(), response.chunk().token_ids().begin(), response.chunk().token_ids().end());
    }
    const grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    if (first_ids.empty()) first_ids = ids;
    EXPECT_EQ(ids, first_ids);  // the same engine on every device
  }
  EXPECT_EQ(devices, (std::set<std::string>{"cpu:0", "cpu:1"}));
  EXPECT_EQ(Info().cpu_fallbacks(), 0);  // no accelerators: CPU devices are not a fallback

  ServerOptions bad = Options("tok512.bin");
  bad.devices.devices = "tpu:1";
  absl::StatusOr<std::unique_ptr<Server>> refused = Server::Start(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("unknown device kind 'tpu'"));
}

// Accelerators first, CPU when they are full: fpga-sim (the accelerator in C simulation) and a CPU
// device, one sequence each, serving a packed stories260K.
class DevicePoolFallbackTest : public ServerTest {
 protected:
  // A packed stories260K; `context` other than 0 stretches its context (its weights do not
  // depend on it), to make requests longer than the attention unit's span possible.
  std::string PackedModel(int context = 0) {
    auto model = LoadModel(RequireModelFile("stories260K.bin").string());
    EXPECT_TRUE(model.ok());
    if (context > 0) (*model)->config.max_seq_len = context;
    QuantizeOptions q;
    q.group_size = 32;
    q.method = QuantMethod::kRtn;
    auto packed = QuantizeModel(**model, q, nullptr, nullptr);
    EXPECT_TRUE(packed.ok());
    const std::string path = (dir_ / "s.safetensors").string();
    EXPECT_TRUE(WritePackedModel(*packed, path).ok());
    return path;
  }
  // A packed stories260K on `devices`, one batch of `max_running` per device.
  ServerOptions PackedOn(const std::string& devices, int max_running) {
    ServerOptions options = Options("tok512.bin", /*max_waiting=*/4, max_running);
    options.model_path = PackedModel();
    options.backend.kv = "kv4";
    options.devices.devices = devices;
    return options;
  }
  // Starts a long greedy stream and waits for its first chunk (so it holds its device).
  struct Open {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
    std::vector<int> ids;
    v1::FinalMessage final;
  };
  Open Start(bool wait_for_first_chunk) {
    Open o;
    v1::GenerateRequest r = Greedy("Once upon a time", 300);
    r.set_ignore_eos(true);
    o.reader = stub_->Generate(o.context.get(), r);
    v1::GenerateResponse response;
    if (wait_for_first_chunk && o.reader->Read(&response)) {
      o.ids.assign(response.chunk().token_ids().begin(), response.chunk().token_ids().end());
    }
    return o;
  }
  static void Finish(Open& o) {
    v1::GenerateResponse response;
    while (o.reader->Read(&response)) {
      if (response.has_final()) o.final = response.final();
      o.ids.insert(o.ids.end(), response.chunk().token_ids().begin(), response.chunk().token_ids().end());
    }
    EXPECT_TRUE(o.reader->Finish().ok());
  }
  ScratchDir dir_;
};

TEST_F(DevicePoolFallbackTest, FullAcceleratorsSpillToCpu) {
  ServerOptions options = PackedOn("fpga-sim,cpu", /*max_running=*/1);
  options.metrics_listen = "127.0.0.1:0";
  StartServer(options);
  Open a = Start(true), b = Start(true), c = Start(false);
  for (Open* o : {&a, &b, &c}) Finish(*o);
  EXPECT_EQ(a.final.device(), "fpga-sim:0");
  EXPECT_EQ(b.final.device(), "cpu:0");       // the accelerator was full
  EXPECT_EQ(c.final.device(), "fpga-sim:0");  // queued for the accelerator, not a second fallback
  EXPECT_EQ(a.ids, b.ids);                    // same tokens on either device
  EXPECT_EQ(a.ids.size(), 300u);
  EXPECT_EQ(Info().cpu_fallbacks(), 1);
  httplib::Client http("127.0.0.1", server_->metrics_port());
  EXPECT_THAT(http.Get("/metrics")->body, HasSubstr("accllm_cpu_fallbacks_total 1\n"));
}

TEST_F(DevicePoolFallbackTest, PolicyNeverKeepsRequestsOnAccelerators) {
  ServerOptions options = PackedOn("fpga-sim,cpu", /*max_running=*/1);
  options.devices.fallback = FallbackPolicy::kNever;
  StartServer(options);
  Open a = Start(true), b = Start(false);
  for (Open* o : {&a, &b}) Finish(*o);
  EXPECT_EQ(a.final.device(), "fpga-sim:0");
  EXPECT_EQ(b.final.device(), "fpga-sim:0");
  EXPECT_EQ(Info().cpu_fallbacks(), 0);
}

// A card that dies mid-stream: its streams go on on the CPU without losing or repeating a token,
// and the card takes no more work.
TEST_F(DevicePoolFallbackTest, AFailedCardsStreamsGoOnElsewhere) {
  ServerOptions options = PackedOn("fpga-sim,cpu", /*max_running=*/4);
  options.backend.sim_fault_after_steps = 40;
  options.metrics_listen = "127.0.0.1:0";
  StartServer(options);
  // One stream, so that it runs alone (batch 1) on either device: the fp16 classifier's sums may
  // round differently in other batch shapes, which greedy decoding of this small quantized model
  // would show.
  Open a = Start(true);
  Finish(a);
  EXPECT_EQ(a.final.finish_reason(), v1::MAX_TOKENS);
  EXPECT_EQ(a.final.device(), "cpu:0");  // where it ended
  EXPECT_EQ(a.ids.size(), 300u);
  // The same request once more, now on the CPU from the start: the same tokens.
  Open c = Start(false);
  Finish(c);
  EXPECT_EQ(c.final.device(), "cpu:0");
  EXPECT_EQ(a.ids, c.ids);
  const v1::ServerInfoResponse info = Info();
  ASSERT_EQ(info.devices_size(), 2);
  EXPECT_FALSE(info.devices(0).healthy());
  EXPECT_TRUE(info.devices(1).healthy());
  EXPECT_EQ(Health(), HealthStatus::SERVING);  // the CPU still serves
  httplib::Client http("127.0.0.1", server_->metrics_port());
  const std::string metrics = http.Get("/metrics")->body;
  EXPECT_THAT(metrics, HasSubstr("accllm_device_failures_total 1\n"));
  EXPECT_THAT(metrics, HasSubstr("accllm_streams_moved_total 1\n"));
  EXPECT_THAT(metrics, HasSubstr("accllm_device_healthy{device=\"fpga-sim:0\",fallback=\"false\"} 0\n"));
}

// A device that cannot be made is logged and left out; the server serves on the rest, and refuses
// to start only when none is left, saying why.
TEST_F(DevicePoolFallbackTest, DevicesThatCannotBeMadeAreLeftOut) {
  ServerOptions fp32 = Options("tok512.bin");  // fpga-sim runs packed models only
  fp32.devices.devices = "fpga-sim,cpu";
  StartServer(fp32);
  const v1::ServerInfoResponse info = Info();
  ASSERT_EQ(info.devices_size(), 1);
  EXPECT_EQ(info.devices(0).name(), "cpu:0");
  EXPECT_TRUE(Generate(Greedy("hi", 3)).status.ok());
  server_.reset();

  fp32.devices.devices = "fpga-sim";
  absl::StatusOr<std::unique_ptr<Server>> none = Server::Start(fp32);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("packed W2A8KV4 models only"));

  // More KV pages than the card's key bank holds: named with the bank and the numbers.
  ServerOptions big = PackedOn("fpga-sim", 1);
  big.backend.kv_pages = 50'000'000;
  none = Server::Start(big);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("which holds 256 MiB; at most"));
}

// A request whose attention would exceed the attention unit's span (8,192 tokens) is not a card
// failure: it goes to a device that can take it, or is refused with OUT_OF_RANGE; the card keeps
// serving what fits.
TEST_F(DevicePoolFallbackTest, RequestsBeyondTheAttentionUnitGoElsewhere) {
  ServerOptions options = PackedOn("fpga-sim,cpu", /*max_running=*/2);
  options.model_path = PackedModel(/*context=*/10000);
  options.backend.kv_pages = 0;  // sized by the server: two full-length streams
  StartServer(options);
  v1::GenerateRequest long_request = Greedy("Once upon a time", 9000);
  long_request.set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, long_request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));  // running
  v1::ServerInfoResponse info = Info();
  ASSERT_EQ(info.devices_size(), 2);
  EXPECT_EQ(info.devices(0).running(), 0) << info.DebugString();  // fpga-sim:0
  EXPECT_EQ(info.devices(1).running(), 1) << info.DebugString();  // cpu:0
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();
  const Streamed short_one = Generate(Greedy("Once upon a time", 20));
  ASSERT_TRUE(short_one.status.ok()) << short_one.status.error_message();
  EXPECT_EQ(short_one.final.device(), "fpga-sim:0");
  EXPECT_TRUE(Info().devices(0).healthy());
  ASSERT_TRUE(WaitIdle());
  server_.reset();

  options.devices.devices = "fpga-sim";
  StartServer(options);
  const Streamed refused = Generate(long_request);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("attends to at most 8192"));
  EXPECT_TRUE(Generate(Greedy("hi", 3)).status.ok());
  EXPECT_EQ(Health(), HealthStatus::SERVING);
}

// /metrics may be asked for while the server stops: it answers or refuses, never reads what the
// server has freed (ASan and TSan watch this test).
TEST_F(ServerTest, MetricsWhileTheServerStops) {
  ServerOptions options = Options("tok512.bin");
  options.metrics_listen = "127.0.0.1:0";
  StartServer(options);
  const int port = server_->metrics_port();
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::thread scraper([&] {
    httplib::Client http("127.0.0.1", port);
    http.set_connection_timeout(0, 200000);
    while (!stop.load()) {
      if (auto got = http.Get("/metrics"); got && got->status == 200) answered.fetch_add(1);
    }
  });
  while (answered.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_.reset();
  stop.store(true);
  scraper.join();
}

TEST_F(DevicePoolFallbackTest, WithNoOtherDeviceTheStreamEndsWithAnError) {
  ServerOptions options = PackedOn("fpga-sim", /*max_running=*/4);
  options.backend.sim_fault_after_steps = 10;
  StartServer(options);
  Open a = Start(true);
  Finish(a);
  EXPECT_EQ(a.final.finish_reason(), v1::ERROR);
  EXPECT_THAT(a.final.error(), HasSubstr("no other device can take the stream"));
  EXPECT_LT(a.ids.size(), 300u);
  // The failed device takes nothing new, and with no device left the server says so.
  EXPECT_EQ(Generate(Greedy("hi", 3)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Health(), HealthStatus::NOT_SERVING);
  server_.reset();  // (the idle check after the test needs a healthy device)
}

TEST_F(ServerTest, TlsAndMutualTls) {
  TestCertificates certs;
  ASSERT_TRUE(certs.ok()) << certs.pem("openssl.log");
  ServerOptions options = Options("tok512.bin");
  options.tls = {certs.path("server.pem"), certs.path("server.key"), ""};
  StartServer(options);
  grpc::SslCredentialsOptions trust;
  trust.pem_root_certs = certs.pem("ca.pem");
  Connect(grpc::SslCredentials(trust));
  Streamed s = Generate(Greedy("Once upon a time", 5));
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  Connect();  // plaintext against a TLS port
  EXPECT_EQ(Generate(Greedy("hi", 2)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  server_.reset();

  options.tls.client_ca_file = certs.path("ca.pem");
  StartServer(options);
  Connect(grpc::SslCredentials(trust));  // no client certificate
  EXPECT_EQ(Generate(Greedy("hi", 2)).status.error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::SslCredentialsOptions mutual = trust;
  mutual.pem_cert_chain = certs.pem("client.pem");
  mutual.pem_private_key = certs.pem("client.key");
  Connect(grpc::SslCredentials(mutual));
  s = Generate(Greedy("Once upon a time", 5));
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  // The command-line client speaks mutual TLS too.
  const std::string client = absl::StrCat(ACCLLM_CLI_PATH, " client --server 127.0.0.1:", server_->port(),
                                          " -n 4 --tls-ca ", certs.path("ca.pem"), " --tls-cert ",
                                          certs.path("client.pem"), " --tls-key ", certs.path("client.key"));
  EXPECT_EQ(Shell(client + " >/dev/null 2>&1"), 0);
  EXPECT_NE(Shell(absl::StrCat(ACCLLM_CLI_PATH, " client --server 127.0.0.1:", server_->port(), " -n 4 --tls-ca ",
                               certs.path("ca.pem"), " >/dev/null 2>&1")),
            0);

  ServerOptions bad = Options("tok512.bin");
  bad.tls = {certs.path("server.pem"), certs.path("missing.key"), ""};
  EXPECT_THAT(std::string(Server::Start(bad).status().message()), HasSubstr("cannot read the TLS key"));
  bad.tls = {"", "", certs.path("ca.pem")};
  EXPECT_THAT(std::string(Server::Start(bad).status().message()), HasSubstr("client CA needs"));
}

// The accllm-server binary: options from a config file, a request per log line, SIGTERM drains.
class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& args, const std::string& log) : log_(log) {
    std::vector<char*> argv;
    std::vector<std::string> all = {ACCLLM_SERVER_PATH};
    all.insert(all.end(), args.begin(), args.end());
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    spawned_ = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) == 0;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~ServerProcess() {
    if (spawned_ && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // The port from "serving ... on port N", once the model is loaded (0 if it never is).
  int WaitForPort() {
    const std::regex serving("serving .* on port ([0-9]+)");
    for (int i = 0; spawned_ && i < 3000; ++i) {
      std::smatch m;
      const std::string text = ReadFile(log_);
      if (std::regex_search(text, m, serving)) return std::stoi(m[1]);
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return 0;
  }
  int Terminate() {
    kill(pid_, SIGTERM);
    waitpid(pid_, &status_, 0);
    exited_ = true;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

 private:
  std::string log_;
  pid_t pid_ = 0;
  bool spawned_ = false, exited_ = false;
  int status_ = 0;
};

TEST(ServerBinaryTest, ConfigFileRequestLogAndSigterm) {
  ScratchDir dir;
  WriteFile(dir / "server.toml", absl::StrCat("model = \"", RequireModelFile("stories260K.bin").string(), "\"\n",
                                              "model-name = \"tiny-stories\"\n", "listen = \"127.0.0.1:0\"\n",
                                              "window = 64\n", "max-running = 4\n", "devices = \"cpu\"\n"));
  ServerProcess server({"--config", (dir / "server.toml").string()}, (dir / "server.log").string());
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << ReadFile(dir / "server.log");

  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);
  {
    grpc::ClientContext context;
    v1::ModelInfoResponse info;
    ASSERT_TRUE(stub->ModelInfo(&context, {}, &info).ok());
    EXPECT_EQ(info.name(), "tiny-stories");  // from the config file
    EXPECT_EQ(info.lambda_window(), 64);
  }
  grpc::ClientContext context;
  v1::GenerateRequest r;
  r.set_text("Once upon a time");
  r.set_max_new_tokens(300);
  r.set_ignore_eos(true);
  r.set_request_id("req-42\n\x1b[2Jforged line");
  auto reader = stub->Generate(&context, r);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  v1::FinalMessage final;
  grpc::Status status;
  std::thread client([&] {
    while (reader->Read(&response)) {
      if (response.has_final()) final = response.final();
    }
    status = reader->Finish();
  });
  EXPECT_EQ(server.Terminate(), 0);  // drains: the running stream finishes first
  client.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(final.usage().generated_tokens(), 300);
  EXPECT_EQ(final.request_id(), "req-42\n\x1b[2Jforged line");
  const std::string log = ReadFile(dir / "server.log");
  // The client's id is escaped in the log: it cannot forge lines or send terminal controls.
  EXPECT_THAT(log, HasSubstr("request id=\"req-42\\n\\x1b[2Jforged line\" device=cpu:0 finish=max_tokens prompt_tokens=5 "
                             "generated_tokens=300"));
  EXPECT_THAT(log, Not(HasSubstr("\nforged line")));
  EXPECT_THAT(log, HasSubstr("draining (signal 15"));

  // A bad option in the config file is a clear error.
  WriteFile(dir / "bad.toml", "model = \"x.bin\"\nmax-runing = 4\n");
  ServerProcess bad({"--config", (dir / "bad.toml").string()}, (dir / "bad.log").string());
  EXPECT_EQ(bad.WaitForPort(), 0);
  EXPECT_THAT(ReadFile(dir / "bad.log"), HasSubstr("max-runing"));

  // Flags are validated like the CLI's: each bad value is refused, naming the flag.
  const std::string model = RequireModelFile("stories260K.bin").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad_flags = {
      {{"--kv", "kv8"}, "--kv"},          {{"--window", "-1"}, "--window"},
      {{"--max-new-tokens", "0"}, "--max-new-tokens"}, {{"--grace", "nan"}, "--grace"},
      {{"--max-running", "0"}, "--max-running"},       {{"--prefill-chunk", "0"}, "--prefill-chunk"},
      {{"--sinks", "-4"}, "--sinks"},                  {{"--log-level", "loud"}, "--log-level"},
  };
  for (const auto& [flags, name] : bad_flags) {
    std::vector<std::string> args = {"-m", model, "--listen", "127.0.0.1:0"};
    args.insert(args.end(), flags.begin(), flags.end());
    ServerProcess refused(args, (dir / "flags.log").string());
    EXPECT_EQ(refused.WaitForPort(), 0) << name;
    EXPECT_THAT(ReadFile(dir / "flags.log"), HasSubstr(name)) << ReadFile(dir / "flags.log");
  }
  EXPECT_EQ(Shell(absl::StrCat(ACCLLM_SERVER_PATH, " --version >", (dir / "version.log").string())), 0);
  EXPECT_THAT(ReadFile(dir / "version.log"), HasSubstr(std::string("accllm-server ") + ACCLLM_VERSION));
}

}  // namespace
}  // namespace accllm::server
