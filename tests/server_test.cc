// The real server on loopback with a real gRPC client.

#include <grpcpp/grpcpp.h>
#include <sys/wait.h>

#include <cmath>

#include "absl/strings/str_cat.h"

#include "gmock/gmock.h"
#include "grpcpp/health_check_service_interface.h"
#include "runtime/generate/generator.h"
#include "runtime/model/load_model.h"
#include "runtime/reference/reference_backend.h"
#include "runtime/tokenizer/utf8.h"
#include "tests/server_fixture.h"
#include "tests/test_support.h"

namespace accllm::server {
namespace {

using ::accllm::testing::ReadFile;
using ::accllm::testing::ScratchDir;
using ::testing::HasSubstr;

TEST_F(ServerTest, StreamEqualsInProcessGeneration) {
  StartServer("tok512.bin");
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(RequireModelFile("stories260K.bin").string()));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  ReferenceBackend reference(*model);
  ASSERT_OK_AND_ASSIGN(auto generator, Generator::Create(reference, *tokenizer));
  GenerationOptions options;
  options.sampling.temperature = 0.0f;
  options.max_new_tokens = 60;
  ASSERT_OK_AND_ASSIGN(GenerationResult expected, generator->Generate("Once upon a time", options));

  const Streamed got = Generate(Greedy("Once upon a time", 60));
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.ids, expected.generated_ids);
  EXPECT_EQ(got.text, expected.text);
  EXPECT_GT(got.chunks, 10);
  EXPECT_EQ(got.final.finish_reason(), v1::MAX_TOKENS);
  EXPECT_EQ(got.final.usage().prompt_tokens(), 5);
  EXPECT_EQ(got.final.usage().generated_tokens(), 60);
  EXPECT_GT(got.final.timing().time_to_first_token_seconds(), 0.0);
  EXPECT_EQ(got.final.device(), "cpu:0");
  EXPECT_GE(got.final.timing().queue_seconds(), 0.0);
  EXPECT_GE(got.final.timing().total_seconds(), got.final.timing().time_to_first_token_seconds());
}

TEST_F(ServerTest, ManyConcurrentStreams) {
  StartServer("tok512.bin");
  std::vector<std::thread> clients;
  std::vector<Streamed> results(12);
  for (int i = 0; i < 12; ++i) {
    clients.emplace_back([&, i] { results[i] = Generate(Greedy(i % 2 ? "Lily and Ben were" : "Once upon a time", 30 + i)); });
  }
  for (auto& c : clients) c.join();
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(results[i].final.usage().generated_tokens(), 30 + i);
    // Same prompt, greedy: the shorter stream is a prefix of the longer.
    if (i >= 2) {
      const auto& a = results[i - 2].ids;
      EXPECT_TRUE(std::equal(a.begin(), a.end(), results[i].ids.begin()));
    }
  }
}

TEST_F(ServerTest, BadRequestsGetClearStatuses) {
  StartServer("tok512.bin");
  v1::GenerateRequest r = Greedy("hi", 5);
  r.set_model("llama-70b");
  Streamed s = Generate(r);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.status.error_message(), HasSubstr("unknown model 'llama-70b'"));

  r = Greedy("hi", 5);
  r.mutable_sampling()->set_top_p(3.0f);
  s = Generate(r);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.status.error_message(), HasSubstr("top_p"));

  r = Greedy("hi", -1);
  EXPECT_EQ(Generate(r).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  r.clear_text();
  r.set_max_new_tokens(5);
  EXPECT_EQ(Generate(r).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  r = Greedy(std::string(600, 'a') + " b c d e f g h i j k l m n o p q r s t u v w x y z " + std::string(2000, 'q'), 5);
  s = Generate(r);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.status.error_message(), HasSubstr("the limit is 511"));
  // Still serving after all of that.
  EXPECT_TRUE(Generate(Greedy("hi", 3)).status.ok());
  r = Greedy("hi", 5);
  r.mutable_token_ids()->add_ids(9999);
  EXPECT_EQ(Generate(r).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Every other parameter with a bad value: INVALID_ARGUMENT naming it, and nothing runs.
  const std::vector<std::pair<std::function<void(v1::GenerateRequest&)>, std::string>> bad = {
      {[](v1::GenerateRequest& q) { q.set_time_limit_seconds(-1); }, "time_limit_seconds"},
      {[](v1::GenerateRequest& q) { q.mutable_sampling()->set_temperature(-0.5f); }, "temperature"},
      {[](v1::GenerateRequest& q) { q.mutable_sampling()->set_top_k(-3); }, "top_k"},
      {[](v1::GenerateRequest& q) { q.mutable_sampling()->set_min_p(1.5f); }, "min_p"},
      {[](v1::GenerateRequest& q) { q.mutable_sampling()->set_repetition_penalty(-2.0f); }, "repetition_penalty"},
      {[](v1::GenerateRequest& q) { q.add_stop(""); }, "stop strings"},
      {[](v1::GenerateRequest& q) { q.add_stop_token_ids(100000); }, "stop token id"},
      {[](v1::GenerateRequest& q) { q.set_time_limit_seconds(std::nan("")); }, "time_limit_seconds"},
      {[](v1::GenerateRequest& q) { q.set_time_limit_seconds(INFINITY); }, "time_limit_seconds"},
      {[](v1::GenerateRequest& q) {
         const std::vector<std::string> stops(17, "x");
         q.mutable_stop()->Assign(stops.begin(), stops.end());
       },
       "at most 16"},
      {[](v1::GenerateRequest& q) { q.add_stop(std::string(257, 'x')); }, "at most 256"},
      {[](v1::GenerateRequest& q) {
         for (int i = 0; i < 65; ++i) q.add_stop_token_ids(1);
       },
       "at most 64"},
      // Refused by its byte length alone, before any encoding work.
      {[](v1::GenerateRequest& q) { q.set_text(std::string(1 << 20, 'a')); }, "bytes; at most"},
      {[](v1::GenerateRequest& q) {
         q.set_return_logprobs(true);
         q.set_top_logprobs(50);
       },
       "logprobs"},
  };
  for (const auto& [mutate, what] : bad) {
    r = Greedy("hi", 5);
    mutate(r);
    s = Generate(r);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what;
    EXPECT_THAT(s.status.error_message(), HasSubstr(what)) << s.status.error_message();
    EXPECT_EQ(s.chunks, 0);
  }
  // (Invalid UTF-8 text cannot be sent at all: proto3 strings are UTF-8 and the client library
  // refuses to serialize it.)
  v1::ServerInfoResponse info = Info();
  EXPECT_EQ(info.version(), ACCLLM_VERSION);  // one version, from CMake
}

// Tokenize answers with each token's bytes, which for text beyond ASCII may be part of a UTF-8
// character: the reply must still parse (pieces are bytes), and the pieces join to the text.
TEST_F(ServerTest, TokenizePiecesAreBytes) {
  StartServer("tok512.bin");
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text("café au lait, naïve");
  v1::TokenizeResponse response;
  const grpc::Status status = stub_->Tokenize(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::string joined;
  for (const std::string& piece : response.pieces()) joined += piece;
  EXPECT_THAT(joined, HasSubstr("café au lait, naïve"));
  bool partial = false;  // tok512 spells é with byte tokens: some piece is not valid UTF-8 alone
  for (const std::string& piece : response.pieces()) partial |= !IsValidUtf8(piece);
  EXPECT_TRUE(partial);
}

TEST_F(ServerTest, CancelAndDeadline) {
  StartServer(StretchedOptions());  // a stream long enough to still run when cancelled
  v1::GenerateRequest r = Greedy("Once upon a time", 4000);
  r.set_ignore_eos(true);
  {
    const int64_t before = TokensProcessed();
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, r);
    v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    ExpectStoppedShort(before, 4000, "cancel");
  }
  r.set_time_limit_seconds(0.02);
  const Streamed s = Generate(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.final.finish_reason(), v1::TIME_LIMIT);
  EXPECT_LT(s.final.usage().generated_tokens(), 4000);
}

// The command-line client, streaming and in load-test mode, against the real server.
TEST_F(ServerTest, CommandLineClient) {
  StartServer("tok512.bin");
  const std::string server = absl::StrCat("--server 127.0.0.1:", server_->port());
  ScratchDir dir;
  const auto run = [&](const std::string& args) {
    const std::string command = absl::StrCat(ACCLLM_CLI_PATH, " client ", server, " ", args, " >", (dir / "out").string(),
                                             " 2>", (dir / "err").string());
    const int status = std::system(command.c_str());
    return std::make_pair(WEXITSTATUS(status), ReadFile(dir / "out") + ReadFile(dir / "err"));
  };
  auto [code, output] = run("-p 'Once upon a time' -n 12 --temperature 0");
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("Once upon a time, there was a little girl"));
  EXPECT_THAT(output, HasSubstr("finish: MAX_TOKENS, prompt tokens: 5, generated tokens: 12"));
  std::tie(code, output) = run("--streams 4 --max-requests 8 --seconds 60 -n 16");
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("| 4 |"));
  EXPECT_THAT(output, HasSubstr("| 8 | 0 | 0 |"));  // completed, refused, failed
  // A chaos run: random cancels and short time limits; exit 0 means no stream failed or was lost.
  std::tie(code, output) = run("--streams 4 --max-requests 40 --seconds 60 -n 32 --cancel-rate 0.3 --deadline-rate 0.3");
  EXPECT_EQ(code, 0) << output;
  std::tie(code, output) = run("-p 'Once upon a time' -n 3 --temperature 0 --logprobs 2");
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, ::testing::ContainsRegex("\\[[0-9]+ -[0-9.]+ [0-9]+:-[0-9.]+ [0-9]+:-[0-9.]+\\]"));
  std::tie(code, output) = run("--model nope -n 3");
  EXPECT_NE(code, 0);
  EXPECT_THAT(output, HasSubstr("unknown model 'nope'"));
}

TEST_F(ServerTest, UnaryCallsHealthAndDrain) {
  StartServer("tok512.model");
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("Once upon a time");
    request.set_add_bos(true);
    v1::TokenizeResponse response;
    ASSERT_TRUE(stub_->Tokenize(&context, request, &response).ok());
    EXPECT_THAT(std::vector<int>(response.ids().begin(), response.ids().end()), ::testing::ElementsAre(1, 403, 407, 261, 378));
  }
  {
    grpc::ClientContext context;
    v1::ModelInfoResponse info;
    ASSERT_TRUE(stub_->ModelInfo(&context, {}, &info).ok());
    EXPECT_EQ(info.name(), "stories260K");
    EXPECT_EQ(info.vocab_size(), 512);
  }
  {
    grpc::ClientContext context;
    v1::ServerInfoResponse info;
    ASSERT_TRUE(stub_->ServerInfo(&context, {}, &info).ok());
    ASSERT_EQ(info.devices_size(), 1);
    EXPECT_EQ(info.devices(0).kv_pages_total(), 256);
  }
  server_->Drain(1.0);
  const Streamed after = Generate(Greedy("hi", 5));
  EXPECT_NE(after.status.error_code(), grpc::StatusCode::OK);
}

}  // namespace
}  // namespace accllm::server
