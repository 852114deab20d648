#include "server/server_flags.h"

#include <algorithm>

#include "absl/strings/numbers.h"

namespace accllm::server {

void AddServerFlags(CLI::App& app, ServerFlags& flags) {
  app.set_version_flag("--version", std::string("accllm-server ") + ACCLLM_VERSION);
  app.set_config("--config", "", "TOML or INI file with any of these options (flags given on the command line win)");
  app.allow_config_extras(false);
  app.add_option("-m,--model", flags.options.model_path, "Model: llama2.c .bin, Hugging Face directory or packed .safetensors")
      ->required();
  app.add_option("-t,--tokenizer", flags.options.tokenizer_path, "Tokenizer (default: beside the model)");
  app.add_option("--model-name", flags.options.model_name, "Name clients use (default: the file's stem)");
  app.add_option("--listen", flags.options.listen, "host:port for gRPC (port 0: any free port)")->capture_default_str();
  app.add_option("--metrics-listen", flags.options.metrics_listen, "host:port for Prometheus /metrics and /healthz (empty: off)");
  app.add_option("--tls-cert", flags.options.tls.cert_file, "PEM certificate chain: serve gRPC over TLS");
  app.add_option("--tls-key", flags.options.tls.key_file, "PEM private key for --tls-cert");
  app.add_option("--tls-client-ca", flags.options.tls.client_ca_file, "PEM CA bundle: require client certificates (mTLS)");
  app.add_option("--devices", flags.options.devices.devices,
                 "Devices: cpu (the W2A8KV4 CPU engine; fp32 models run in fp32), reference (fp32 oracle), "
                 "fpga-sim (the accelerator in C simulation; packed models), fpga (U280 cards through XRT; "
                 "bare: every card found, none is fine), each as kind or kind:count, comma-separated")
      ->capture_default_str();
  app.add_option("--xclbin", flags.options.backend.xclbin, "Accelerator image for fpga devices (fpga/build)");
  app.add_option("--sim-fault-after", flags.options.backend.sim_fault_after_steps,
                 "Testing: fpga-sim devices fail like a faulted card after this many steps");
  app.add_option("--fallback", flags.fallback, "When CPU devices take requests: when-full, never or balance")
      ->capture_default_str();
  app.add_option("--kv", flags.options.backend.kv, "KV precision for the cpu engine: f32 or kv4")
      ->check(CLI::IsMember({"f32", "kv4"}))->capture_default_str();
  app.add_option("--classifier", flags.options.backend.classifier,
                 "Packed models' classifier: w8 (8-bit rows on the integer kernels) or f16 as stored")
      ->check(CLI::IsMember({"f16", "w8"}))->capture_default_str();
  app.add_option("--window", flags.options.backend.window, "Λ window (0 = full attention)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--sinks", flags.options.backend.sinks, "Λ sink tokens")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--threads", flags.options.backend.threads, "Engine threads per device (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--pin-threads", flags.options.backend.pin_threads,
               "Pin each engine thread to its own CPU, one per physical core first (one CPU device per host)");
  app.add_option("--page-tokens", flags.options.backend.page_tokens, "Tokens per KV page")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--kv-pages", flags.options.backend.kv_pages,
                 "KV pages per device (0 = max-running full-length sequences, or what a card's KV banks hold)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-running", flags.options.scheduler.max_running, "Sequences decoded together per device")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-waiting", flags.options.scheduler.max_waiting, "Bounded wait queue per device")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--prefill-chunk", flags.options.scheduler.prefill_chunk, "Prompt tokens per step")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-new-tokens", flags.options.service.default_max_new_tokens, "Default max_new_tokens")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-prompt-tokens", flags.options.service.max_prompt_tokens, "Longest prompt accepted (0 = the context - 1)")
      ->check(CLI::NonNegativeNumber);
  // CLI11's range checks let NaN through (every comparison with it is false).
  const CLI::Validator finite_seconds(
      [](std::string& text) -> std::string {
        double v = 0;
        if (!absl::SimpleAtod(text, &v) || !(v >= 0 && v <= 86400)) return "want seconds in [0, 86400], got " + text;
        return {};
      },
      "SECONDS", "finite seconds");
  app.add_option("--grace", flags.grace, "Seconds running streams may finish after SIGTERM")->check(finite_seconds)
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))->capture_default_str();
}

absl::StatusOr<ServerFlags> ParseServerFlags(std::vector<std::string> args) {
  ServerFlags flags;
  CLI::App app{"accllm-server"};
  AddServerFlags(app, flags);
  std::reverse(args.begin(), args.end());  // CLI11 takes a vector in reverse order
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  absl::StatusOr<FallbackPolicy> policy = ParseFallbackPolicy(flags.fallback);
  if (!policy.ok()) return policy.status();
  flags.options.devices.fallback = *policy;
  if (absl::Status s = ValidateServerOptions(flags.options); !s.ok()) return s;
  return flags;
}

}  // namespace accllm::server
