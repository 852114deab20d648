// accllm-server: streaming generation over gRPC.
#include <pthread.h>

#include <csignal>
#include <cstdio>

#include "CLI/CLI.hpp"
#include "server/server.h"
#include "server/server_flags.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

// SIGTERM and SIGINT, blocked in every thread and taken by sigwait on the main thread: no
// handler runs on a gRPC thread, and nothing is shared with one.
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

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

  // Before any thread starts, so that all inherit the mask. A signal during Load waits for it.
  const sigset_t stop_signals = StopSignals();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  absl::StatusOr<std::unique_ptr<accllm::server::Server>> server = accllm::server::Server::Listen(flags.options);
  if (!server.ok()) return fail(server.status());
  spdlog::info("listening on port {}{}; loading {}", (*server)->port(),
               (*server)->metrics_port() > 0 ? " (metrics on port " + std::to_string((*server)->metrics_port()) + ")" : "",
               flags.options.model_path);
  if (absl::Status loaded = (*server)->Load(); !loaded.ok()) return fail(loaded);
  std::fprintf(stderr, "accllm-server: serving %s on port %d\n", flags.options.model_path.c_str(), (*server)->port());
  int signal = 0;
  if (sigwait(&stop_signals, &signal) != 0) return fail(absl::InternalError("sigwait failed"));
  spdlog::info("draining (signal {}, grace {:.0f} s)", signal, flags.grace);
  (*server)->Drain(flags.grace);
  spdlog::info("stopped");
  return 0;
}
