// The safetensors reader and the packed W2A8KV4 model on arbitrary bytes: every header field
// and every tensor's shape and offsets are validated before use.
#include "runtime/io/safetensors.h"
#include "runtime/model/packed_model.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  accllm::fuzz::InputFile file(data, size);
  absl::StatusOr<std::unique_ptr<accllm::PackedModel>> model = accllm::LoadPackedModel(file.path());
  if (model.ok()) (void)(*model)->ToEngineWeights();
  return 0;
}
