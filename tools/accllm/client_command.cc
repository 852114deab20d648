// accllm client: stream a generation from accllm-server, or load-test it.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "accllm/v1/generation.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "absl/strings/str_cat.h"
#include "tools/accllm/commands.h"

namespace accllm::cli {
namespace {

namespace v1 = ::accllm::v1;
using Clock = std::chrono::steady_clock;

struct ClientFlags {
  std::string server = "127.0.0.1:50051";
  std::string prompt = "Once upon a time";
  std::string model;
  int max_new_tokens = 200;
  float temperature = 0.8f;
  float top_p = 0.9f;
  int64_t seed = -1;
  bool ids = false;
  bool ignore_eos = false;
  int logprobs = -1;
  std::string tls_ca, tls_cert, tls_key;
  // load test
  int streams = 0;
  double seconds = 10;
  int max_requests = 0;
  double cancel_rate = 0;    // share of requests the client cancels mid-stream
  double deadline_rate = 0;  // share of requests sent with a short time limit
  // health probe
  bool health = false;
  std::string health_service;
  double health_timeout = 3;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Plaintext, or TLS when a CA is given (with a client certificate for mutual TLS).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ClientFlags& f) {
  if (f.tls_ca.empty()) {
    if (!f.tls_cert.empty() || !f.tls_key.empty()) return absl::InvalidArgumentError("--tls-cert/--tls-key need --tls-ca");
    return grpc::CreateChannel(f.server, grpc::InsecureChannelCredentials());
  }
  grpc::SslCredentialsOptions ssl;
  for (const auto& [path, out] : {std::pair{&f.tls_ca, &ssl.pem_root_certs}, std::pair{&f.tls_cert, &ssl.pem_cert_chain},
                                  std::pair{&f.tls_key, &ssl.pem_private_key}}) {
    if (path->empty()) continue;
    *out = ReadText(*path);
    if (out->empty()) return absl::NotFoundError(absl::StrCat("cannot read '", *path, "'"));
  }
  return grpc::CreateChannel(f.server, grpc::SslCredentials(ssl));
}

v1::GenerateRequest MakeRequest(const ClientFlags& f, uint64_t seed) {
  v1::GenerateRequest r;
  r.set_model(f.model);
  r.set_text(f.prompt);
  r.set_max_new_tokens(f.max_new_tokens);
  r.set_return_token_ids(f.ids || f.logprobs >= 0);
  r.set_ignore_eos(f.ignore_eos);
  if (f.logprobs >= 0) {
    r.set_return_logprobs(true);
    r.set_top_logprobs(f.logprobs);
  }
  r.mutable_sampling()->set_temperature(f.temperature);
  r.mutable_sampling()->set_top_p(f.top_p);
  r.mutable_sampling()->set_seed(seed);
  return r;
}

// The standard gRPC health check, as container and load-balancer probes use it: exit 0 only when
// the server reports SERVING for the service.
int ProbeHealth(const ClientFlags& f) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(f);
  if (!channel.ok()) {
    std::fprintf(stderr, "accllm: error: %s\n", std::string(channel.status().message()).c_str());
    return 1;
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(f.health_timeout)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(f.health_service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = grpc::health::v1::Health::NewStub(*channel)->Check(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "accllm: health check of %s failed: %s (%d)\n", f.server.c_str(), status.error_message().c_str(),
                 static_cast<int>(status.error_code()));
    return 1;
  }
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

const char* FinishName(v1::FinishReason reason) { return v1::FinishReason_Name(reason).c_str(); }

int Stream(const ClientFlags& f) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(f);
  if (!channel.ok()) {
    std::fprintf(stderr, "accllm: error: %s\n", std::string(channel.status().message()).c_str());
    return 1;
  }
  auto stub = v1::Generation::NewStub(*channel);
  grpc::ClientContext context;
  const uint64_t seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
  auto reader = stub->Generate(&context, MakeRequest(f, seed));
  v1::GenerateResponse response;
  std::fputs(f.prompt.c_str(), stdout);
  v1::FinalMessage final;
  while (reader->Read(&response)) {
    if (response.has_chunk()) {
      std::fputs(response.chunk().text().c_str(), stdout);
      if (f.ids) {
        for (int id : response.chunk().token_ids()) std::fprintf(stderr, "[%d]", id);
      }
      for (const v1::TokenLogprobs& lp : response.chunk().logprobs()) {
        std::fprintf(stderr, "[%d %.3f", lp.sampled().token_id(), lp.sampled().logprob());
        for (const v1::TokenLogprob& alt : lp.top()) std::fprintf(stderr, " %d:%.3f", alt.token_id(), alt.logprob());
        std::fprintf(stderr, "]");
      }
      std::fflush(stdout);
    } else {
      final = response.final();
    }
  }
  std::printf("\n");
  std::fflush(stdout);  // the text ends before the summary on stderr starts
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    std::fprintf(stderr, "accllm: error: %s (%d)\n", status.error_message().c_str(), static_cast<int>(status.error_code()));
    return 1;
  }
  std::fprintf(stderr, "finish: %s, prompt tokens: %d, generated tokens: %d, time to first token: %.1f ms, "
                       "decode: %.1f tokens/s, device: %s\n",
               FinishName(final.finish_reason()), final.usage().prompt_tokens(), final.usage().generated_tokens(),
               1e3 * final.timing().time_to_first_token_seconds(),
               final.usage().generated_tokens() / std::max(final.timing().decode_seconds(), 1e-9), final.device().c_str());
  return 0;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * v.size()))];
}

// N client threads, each issuing requests back to back until the time or request budget ends.
// With --cancel-rate and --deadline-rate some requests are cancelled mid-stream or sent with a
// short time limit (a chaos run); every stream must still end with a final message or the
// status the client caused, else it counts as failed.
int LoadTest(const ClientFlags& f) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(f);
  if (!channel.ok()) {
    std::fprintf(stderr, "accllm: error: %s\n", std::string(channel.status().message()).c_str());
    return 1;
  }
  std::mutex mutex;
  std::vector<double> ttft, server_ttft, inter_token;
  std::atomic<int64_t> tokens{0}, completed{0}, refused{0}, failed{0}, issued{0}, cancelled{0}, timed_out{0};
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.seconds));
  std::vector<std::thread> threads;
  for (int s = 0; s < f.streams; ++s) {
    threads.emplace_back([&, s] {
      auto stub = v1::Generation::NewStub(*channel);
      std::mt19937_64 rng(static_cast<uint64_t>(s) * 7919 + 1);
      std::uniform_real_distribution<double> unit(0, 1);
      for (uint64_t n = 0; Clock::now() < end; ++n) {
        if (f.max_requests > 0 && issued.fetch_add(1) >= f.max_requests) break;
        v1::GenerateRequest request = MakeRequest(f, s * 1000003ull + n);
        const bool cancel = unit(rng) < f.cancel_rate;
        const int cancel_after = static_cast<int>(unit(rng) * f.max_new_tokens);
        if (!cancel && unit(rng) < f.deadline_rate) request.set_time_limit_seconds(0.001 + 0.05 * unit(rng));
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
        const auto sent = Clock::now();
        auto reader = stub->Generate(&context, request);
        v1::GenerateResponse response;
        std::vector<double> gaps;
        double first = -1;
        auto last = sent;
        int64_t got = 0;
        bool have_final = false;
        v1::FinalMessage final;
        while (reader->Read(&response)) {
          if (response.has_final()) {
            have_final = true;
            final = response.final();
            continue;
          }
          const auto now = Clock::now();
          if (first < 0) {
            first = std::chrono::duration<double>(now - sent).count();
          } else {
            gaps.push_back(std::chrono::duration<double>(now - last).count());
          }
          last = now;
          ++got;
          if (cancel && got >= cancel_after) context.TryCancel();
        }
        const grpc::Status status = reader->Finish();
        if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          refused.fetch_add(1);
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        if (cancel && status.error_code() == grpc::StatusCode::CANCELLED) {
          cancelled.fetch_add(1);
          continue;
        }
        if (!status.ok() || !have_final) {
          failed.fetch_add(1);
          std::fprintf(stderr, "accllm: stream failed: %s\n",
                       status.ok() ? "no final message" : status.error_message().c_str());
          continue;
        }
        if (final.finish_reason() == v1::TIME_LIMIT) timed_out.fetch_add(1);
        completed.fetch_add(1);
        tokens.fetch_add(got);
        std::lock_guard<std::mutex> lock(mutex);
        if (first >= 0) {
          ttft.push_back(first);
          server_ttft.push_back(final.timing().time_to_first_token_seconds());
        }
        inter_token.insert(inter_token.end(), gaps.begin(), gaps.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("| streams | seconds | completed | refused | failed | cancelled | time limit | streamed chunks/s | "
              "TTFT p50 ms | TTFT p99 ms | server TTFT p50 ms | inter-token p50 ms | inter-token p99 ms |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| %d | %.1f | %lld | %lld | %lld | %lld | %lld | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", f.streams,
              elapsed, static_cast<long long>(completed.load()), static_cast<long long>(refused.load()),
              static_cast<long long>(failed.load()), static_cast<long long>(cancelled.load()),
              static_cast<long long>(timed_out.load()), tokens.load() / elapsed, 1e3 * Percentile(ttft, 0.5),
              1e3 * Percentile(ttft, 0.99), 1e3 * Percentile(server_ttft, 0.5), 1e3 * Percentile(inter_token, 0.5),
              1e3 * Percentile(inter_token, 0.99));
  return failed.load() == 0 ? 0 : 1;
}

}  // namespace

void AddClientCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ClientFlags>();
  CLI::App* cmd = app.add_subcommand("client", "Stream a generation from accllm-server (or load-test it with --streams)");
  cmd->add_option("--server", flags->server, "host:port")->capture_default_str();
  cmd->add_option("-p,--prompt", flags->prompt, "Prompt text")->capture_default_str();
  cmd->add_option("--model", flags->model, "Model name (default: the server's)");
  cmd->add_option("-n,--max-new-tokens", flags->max_new_tokens, "Tokens to generate")->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--temperature", flags->temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--top-p", flags->top_p, "Nucleus mass")->capture_default_str();
  cmd->add_option("--seed", flags->seed, "Seed (default: random)");
  cmd->add_flag("--ids", flags->ids, "Print token ids to stderr");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating past EOS");
  cmd->add_option("--logprobs", flags->logprobs, "Print each token's logprob and the N likeliest (0-20) to stderr");
  cmd->add_option("--tls-ca", flags->tls_ca, "PEM CA bundle: connect over TLS, trusting it");
  cmd->add_option("--tls-cert", flags->tls_cert, "PEM client certificate (mutual TLS)");
  cmd->add_option("--tls-key", flags->tls_key, "PEM key of --tls-cert");
  cmd->add_option("--streams", flags->streams, "Load test: concurrent streams (0 = stream one generation)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seconds", flags->seconds, "Load test: duration")->capture_default_str();
  cmd->add_option("--max-requests", flags->max_requests, "Load test: stop after this many requests (0 = no limit)");
  cmd->add_option("--cancel-rate", flags->cancel_rate, "Load test: share of requests cancelled mid-stream")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--deadline-rate", flags->deadline_rate, "Load test: share of requests with a 1-51 ms time limit")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--health", flags->health,
                "Probe the server's gRPC health (exit 0 when SERVING, as a container health check)");
  cmd->add_option("--health-service", flags->health_service, "Service name for --health (default: the server as a whole)");
  cmd->add_option("--health-timeout", flags->health_timeout, "Seconds --health waits")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([flags, exit_code] {
    if (flags->health) {
      *exit_code = ProbeHealth(*flags);
    } else {
      *exit_code = flags->streams > 0 ? LoadTest(*flags) : Stream(*flags);
    }
  });
}

}  // namespace accllm::cli
