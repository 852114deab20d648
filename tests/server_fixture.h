// The fixture of the server tests: a real server on loopback, a real gRPC client, and after
// every test a check that the devices are idle with every KV page back in its pool.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "accllm/v1/generation.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "runtime/model/llama2c_format.h"
#include "runtime/model/load_model.h"
#include "server/server.h"
#include "tests/test_support.h"

namespace accllm::server {

namespace v1 = ::accllm::v1;
using ::accllm::testing::RequireModelFile;

// The test daemon: stories260K on the CPU engine with fp32 KV, on a loopback port.
inline ServerOptions StoriesServerOptions(const std::string& tokenizer = "tok512.bin", int max_waiting = 16,
                                          int max_running = 8) {
  ServerOptions options;
  options.model_path = RequireModelFile("stories260K.bin").string();
  options.tokenizer_path = RequireModelFile(tokenizer).string();
  options.listen = "127.0.0.1:0";
  options.backend.engine = "cpu";
  options.backend.kv = "f32";
  options.backend.kv_pages = 256;
  options.scheduler.max_running = max_running;
  options.scheduler.max_waiting = max_waiting;
  return options;
}

// stories260K with its context stretched to `context` tokens (its weights do not depend on it),
// written to `path`: a request can then run long enough that no machine, however loaded, runs it
// to its end before the client acts.
inline std::string WriteStretchedStories(const std::filesystem::path& path, int context) {
  auto model = LoadModel(RequireModelFile("stories260K.bin").string());
  EXPECT_TRUE(model.ok()) << model.status();
  (*model)->config.max_seq_len = context;
  EXPECT_TRUE(WriteLlama2cModel(ModelWeightSource(**model), path.string(), Llama2cVersion::kV1).ok());
  return path.string();
}

class ServerTest : public ::testing::Test {
 protected:
  static ServerOptions Options(const std::string& tokenizer, int max_waiting = 16, int max_running = 8) {
    return StoriesServerOptions(tokenizer, max_waiting, max_running);
  }
  // stories260K with its context stretched to `context` tokens (its weights do not depend on
  // it), written once per test: a prompt can then be long enough that no machine, however
  // loaded, runs it to its end before the client acts.
  std::string StretchedModel(int context) { return WriteStretchedStories(scratch_ / "stretched.bin", context); }
  // The server's options on StretchedModel(4096), its KV pool sized by the server.
  ServerOptions StretchedOptions(int max_waiting = 16, int max_running = 8) {
    ServerOptions options = Options("tok512.bin", max_waiting, max_running);
    options.model_path = StretchedModel(4096);
    options.backend.kv_pages = 0;
    return options;
  }

  // After a stream was cancelled or timed out, what the server did: it let go of the stream (no
  // device runs or holds anything), ran fewer tokens than the whole request (`whole`) since
  // `before`, and spends no further step on it.
  void ExpectStoppedShort(int64_t before, int64_t whole, const std::string& what) {
    ASSERT_TRUE(WaitIdle()) << what << ": the request still holds its device: " << Info().DebugString();
    const int64_t spent = TokensProcessed() - before;
    EXPECT_LT(spent, whole) << what << ": the server ran the whole request";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(TokensProcessed() - before, spent) << what << ": the device went on with it";
  }

  // A prompt of `n` token ids (BOS first).
  static v1::GenerateRequest LongPrompt(int n, int max_new_tokens) {
    v1::GenerateRequest r;
    for (int i = 0; i < n; ++i) r.mutable_token_ids()->add_ids(i == 0 ? 1 : 300 + i % 100);
    r.set_max_new_tokens(max_new_tokens);
    return r;
  }

  void StartServer(const std::string& tokenizer, int max_waiting = 16, int max_running = 8) {
    StartServer(Options(tokenizer, max_waiting, max_running));
  }
  void StartServer(const ServerOptions& options) {
    ASSERT_OK_AND_ASSIGN(server_, Server::Start(options));
    Connect();
  }
  void Connect(std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials()) {
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()), credentials);
    stub_ = v1::Generation::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  // After every test: no request left on any device and every KV page back in its pool.
  void TearDown() override {
    if (server_ == nullptr || server_->state() != ServingState::kServing) return;
    v1::ServerInfoResponse info;
    for (int attempt = 0; attempt < 500; ++attempt) {
      info = Info();
      bool idle = info.devices_size() > 0;
      for (const auto& d : info.devices()) {
        idle &= d.running() == 0 && d.waiting() == 0 && d.kv_pages_in_use() == 0 && d.kv_pages_reserved() == 0;
      }
      if (idle) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "devices still busy or holding KV pages after the test: " << info.DebugString();
  }

  v1::ServerInfoResponse Info() {
    grpc::ClientContext context;
    v1::ServerInfoResponse info;
    const grpc::Status status = stub_->ServerInfo(&context, {}, &info);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return info;
  }

  // Prompt and generated tokens the devices have run, all together (what the server spent).
  int64_t TokensProcessed() {
    int64_t n = 0;
    const v1::ServerInfoResponse info = Info();
    for (const auto& d : info.devices()) n += d.tokens_processed();
    return n;
  }

  // Waits (up to 10 s) until no device runs or holds anything; false if that never happened.
  bool WaitIdle() {
    for (int attempt = 0; attempt < 1000; ++attempt) {
      bool idle = true;
      const v1::ServerInfoResponse info = Info();
      for (const auto& d : info.devices()) {
        idle &= d.running() == 0 && d.waiting() == 0 && d.kv_pages_in_use() == 0 && d.kv_pages_reserved() == 0;
      }
      if (idle) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health() {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health_->Check(&context, {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  struct Streamed {
    grpc::Status status;
    std::string text;
    std::vector<int> ids;
    v1::FinalMessage final;
    int chunks = 0;
  };

  Streamed Generate(const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, request);
    Streamed out;
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_chunk()) {
        ++out.chunks;
        out.text += response.chunk().text();
        out.ids.insert(out.ids.end(), response.chunk().token_ids().begin(), response.chunk().token_ids().end());
      } else {
        out.final = response.final();
      }
    }
    out.status = reader->Finish();
    return out;
  }

  static v1::GenerateRequest Greedy(const std::string& prompt, int n) {
    v1::GenerateRequest r;
    r.set_text(prompt);
    r.set_max_new_tokens(n);
    r.set_return_token_ids(true);
    r.mutable_sampling()->set_temperature(0.0f);
    return r;
  }

  ::accllm::testing::ScratchDir scratch_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace accllm::server
