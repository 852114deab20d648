// accllm-server: streaming generation over gRPC.
#include <csignal>
#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
#include "server/server.h"
#include "server/server_flags.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int signal) { g_signal = signal; }
}  // namespace

int main(int argc, char** argv) {
  accllm::server::ServerFlags flags;
  CLI::App app{"accllm-server: streaming LLM generation over gRPC"};
  accllm::server::AddServerFlags(app, flags);
  CLI11_PARSE(app, argc, argv);

  spdlog::set_default_logger(spdlog::stderr_color_mt("accllm-server"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  auto fail = [](const absl::Status& status) {
    std::fprintf(stderr, "accllm-server: error: %s\n", std::string(status.message()).c_str());
    return 1;
  };
  absl::StatusOr<accllm::server::FallbackPolicy> policy = accllm::server::ParseFallbackPolicy(flags.fallback);
  if (!policy.ok()) return fail(policy.status());
  flags.options.devices.fallback = *policy;

  absl::StatusOr<std::unique_ptr<accllm::server::Server>> server = accllm::server::Server::Listen(flags.options);
  if (!server.ok()) return fail(server.status());
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  spdlog::info("listening on port {}{}; loading {}", (*server)->port(),
               (*server)->metrics_port() > 0 ? " (metrics on port " + std::to_string((*server)->metrics_port()) + ")" : "",
               flags.options.model_path);
  if (absl::Status loaded = (*server)->Load(); !loaded.ok()) return fail(loaded);
  std::fprintf(stderr, "accllm-server: serving %s on port %d\n", flags.options.model_path.c_str(), (*server)->port());
  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  spdlog::info("draining (signal {}, grace {:.0f} s)", static_cast<int>(g_signal), flags.grace);
  (*server)->Drain(flags.grace);
  spdlog::info("stopped");
  return 0;
}
