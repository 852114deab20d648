// accllm-server: streaming generation over gRPC.
#include <csignal>
#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
#include "server/server.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int signal) { g_signal = signal; }
}  // namespace

int main(int argc, char** argv) {
  accllm::server::ServerOptions options;
  double grace = 30;
  CLI::App app{"accllm-server: streaming LLM generation over gRPC"};
  app.add_option("-m,--model", options.model_path, "Model: llama2.c .bin, Hugging Face directory or packed .safetensors")
      ->required();
  app.add_option("-t,--tokenizer", options.tokenizer_path, "Tokenizer (default: beside the model)");
  app.add_option("--model-name", options.model_name, "Name clients use (default: the file's stem)");
  app.add_option("--listen", options.listen, "host:port for gRPC")->capture_default_str();
  app.add_option("--engine", options.backend.engine, "reference or cpu (default: cpu for packed models)");
  app.add_option("--kv", options.backend.kv, "KV precision for the cpu engine: f32 or kv4")->capture_default_str();
  app.add_option("--window", options.backend.window, "Λ window (0 = full attention)")->capture_default_str();
  app.add_option("--sinks", options.backend.sinks, "Λ sink tokens")->capture_default_str();
  app.add_option("--threads", options.backend.threads, "Engine threads (0 = all)");
  app.add_option("--kv-pages", options.backend.kv_pages, "KV pages in the pool (0 = max-running full-length sequences)");
  app.add_option("--max-running", options.scheduler.max_running, "Sequences decoded together")->capture_default_str();
  app.add_option("--max-waiting", options.scheduler.max_waiting, "Bounded wait queue")->capture_default_str();
  app.add_option("--prefill-chunk", options.scheduler.prefill_chunk, "Prompt tokens per step")->capture_default_str();
  app.add_option("--max-new-tokens", options.service.default_max_new_tokens, "Default max_new_tokens")->capture_default_str();
  app.add_option("--grace", grace, "Seconds running streams may finish after SIGTERM")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<std::unique_ptr<accllm::server::Server>> server = accllm::server::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "accllm-server: error: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "accllm-server: serving %s on port %d\n", options.model_path.c_str(), (*server)->port());
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::fprintf(stderr, "accllm-server: draining (signal %d, grace %.0f s)\n", static_cast<int>(g_signal), grace);
  (*server)->Drain(grace);
  return 0;
}
