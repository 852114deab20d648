// Request validation as the server does it: a serialized GenerateRequest from a client, through
// the checks on the gRPC thread and the preparation (encoding, limits) that follows, then the
// scheduler's own validation. Bad input is a status, never a crash or undefined behaviour.
#include <cstdio>

#include "runtime/generate/token_stream.h"
#include "server/generation_service.h"
#include "spdlog/sinks/null_sink.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

struct Fixture {
  accllm::server::ServerMetrics metrics;
  accllm::server::ServingRuntime runtime;
  std::unique_ptr<accllm::server::GenerationService> service;
  Fixture() {
    const std::string dir = accllm::fuzz::ModelsDir();
    auto model = accllm::LoadAnyModel(dir + "/stories260K.bin", accllm::LoadMode::kAnonymous);
    auto tokenizer = accllm::LoadTokenizerFor(*model, dir + "/tok512.model");
    if (!model.ok() || !tokenizer.ok()) {
      std::fprintf(stderr, "cannot load stories260K and tok512.model from %s\n", dir.c_str());
      std::abort();
    }
    runtime.model = std::move(*model);
    runtime.tokenizer = std::move(*tokenizer);
    for (int id = 0; id < runtime.tokenizer->vocab_size(); ++id) {
      runtime.max_token_bytes = std::max<int>(runtime.max_token_bytes, runtime.tokenizer->TokenBytes(id).size());
    }
    accllm::server::ServiceOptions options;
    options.model_name = "stories260K";
    service = std::make_unique<accllm::server::GenerationService>(
        options, metrics, std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>()));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static Fixture* fixture = new Fixture();
  accllm::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<accllm::ScheduledRequest> scheduled = fixture->service->ToScheduledRequest(fixture->runtime, request);
  if (!scheduled.ok()) return 0;
  const accllm::LlamaConfig& config = fixture->runtime.model.config();
  if (accllm::ValidateGenerationRequest(scheduled->prompt_ids, scheduled->options, config.vocab_size,
                                        config.max_seq_len)
          .ok()) {
    accllm::TokenStream stream(*fixture->runtime.tokenizer, scheduled->prompt_ids, scheduled->options,
                               config.max_seq_len);
  }
  return 0;
}
