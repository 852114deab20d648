// accllm-server: streaming generation over gRPC.
#include <csignal>
#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "server/server.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int signal) { g_signal = signal; }
}  // namespace

int main(int argc, char** argv) {
  accllm::server::ServerOptions options;
  double grace = 30;
  std::string fallback = "when-full";
  std::string log_level = "info";
  CLI::App app{"accllm-server: streaming LLM generation over gRPC"};
  app.set_version_flag("--version", std::string("accllm-server ") + ACCLLM_VERSION);
  app.set_config("--config", "", "TOML or INI file with any of these options (flags given on the command line win)");
  app.allow_config_extras(false);
  app.add_option("-m,--model", options.model_path, "Model: llama2.c .bin, Hugging Face directory or packed .safetensors")
      ->required();
  app.add_option("-t,--tokenizer", options.tokenizer_path, "Tokenizer (default: beside the model)");
  app.add_option("--model-name", options.model_name, "Name clients use (default: the file's stem)");
  app.add_option("--listen", options.listen, "host:port for gRPC (port 0: any free port)")->capture_default_str();
  app.add_option("--metrics-listen", options.metrics_listen, "host:port for Prometheus /metrics and /healthz (empty: off)");
  app.add_option("--tls-cert", options.tls.cert_file, "PEM certificate chain: serve gRPC over TLS");
  app.add_option("--tls-key", options.tls.key_file, "PEM private key for --tls-cert");
  app.add_option("--tls-client-ca", options.tls.client_ca_file, "PEM CA bundle: require client certificates (mTLS)");
  app.add_option("--devices", options.devices.devices,
                 "Devices: cpu (the W2A8KV4 CPU engine; fp32 models run in fp32), reference (fp32 oracle), "
                 "fpga-sim (the accelerator in C simulation; packed models), fpga (U280 cards through XRT; "
                 "bare: every card found, none is fine), each as kind or kind:count, comma-separated")
      ->capture_default_str();
  app.add_option("--xclbin", options.backend.xclbin, "Accelerator image for fpga devices (fpga/build)");
  app.add_option("--sim-fault-after", options.backend.sim_fault_after_steps,
                 "Testing: fpga-sim devices fail like a faulted card after this many steps");
  app.add_option("--fallback", fallback, "When CPU devices take requests: when-full, never or balance")
      ->capture_default_str();
  app.add_option("--kv", options.backend.kv, "KV precision for the cpu engine: f32 or kv4")
      ->check(CLI::IsMember({"f32", "kv4"}))->capture_default_str();
  app.add_option("--window", options.backend.window, "Λ window (0 = full attention)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--sinks", options.backend.sinks, "Λ sink tokens")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--threads", options.backend.threads, "Engine threads per device (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--page-tokens", options.backend.page_tokens, "Tokens per KV page")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--kv-pages", options.backend.kv_pages,
                 "KV pages per device (0 = max-running full-length sequences, or what a card's KV banks hold)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-running", options.scheduler.max_running, "Sequences decoded together per device")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-waiting", options.scheduler.max_waiting, "Bounded wait queue per device")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--prefill-chunk", options.scheduler.prefill_chunk, "Prompt tokens per step")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-new-tokens", options.service.default_max_new_tokens, "Default max_new_tokens")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-prompt-tokens", options.service.max_prompt_tokens, "Longest prompt accepted (0 = the context - 1)")
      ->check(CLI::NonNegativeNumber);
  // CLI11's range checks let NaN through (every comparison with it is false).
  const CLI::Validator finite_seconds(
      [](std::string& text) -> std::string {
        double v = 0;
        if (!absl::SimpleAtod(text, &v) || !(v >= 0 && v <= 86400)) return "want seconds in [0, 86400], got " + text;
        return {};
      },
      "SECONDS", "finite seconds");
  app.add_option("--grace", grace, "Seconds running streams may finish after SIGTERM")->check(finite_seconds)
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_default_logger(spdlog::stderr_color_mt("accllm-server"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
  spdlog::set_level(spdlog::level::from_str(log_level));
  auto fail = [](const absl::Status& status) {
    std::fprintf(stderr, "accllm-server: error: %s\n", std::string(status.message()).c_str());
    return 1;
  };
  absl::StatusOr<accllm::server::FallbackPolicy> policy = accllm::server::ParseFallbackPolicy(fallback);
  if (!policy.ok()) return fail(policy.status());
  options.devices.fallback = *policy;

  absl::StatusOr<std::unique_ptr<accllm::server::Server>> server = accllm::server::Server::Listen(options);
  if (!server.ok()) return fail(server.status());
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  spdlog::info("listening on port {}{}; loading {}", (*server)->port(),
               (*server)->metrics_port() > 0 ? " (metrics on port " + std::to_string((*server)->metrics_port()) + ")" : "",
               options.model_path);
  if (absl::Status loaded = (*server)->Load(); !loaded.ok()) return fail(loaded);
  std::fprintf(stderr, "accllm-server: serving %s on port %d\n", options.model_path.c_str(), (*server)->port());
  while (g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  spdlog::info("draining (signal {}, grace {:.0f} s)", static_cast<int>(g_signal), grace);
  (*server)->Drain(grace);
  spdlog::info("stopped");
  return 0;
}
