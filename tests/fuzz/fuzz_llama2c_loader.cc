// The llama2.c checkpoint loader (legacy header and `ak42` v1) on arbitrary bytes: a clear
// status or a model, never a crash, a read out of bounds or a huge allocation.
#include "runtime/model/llama2c_format.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  accllm::fuzz::InputFile file(data, size);
  for (accllm::LoadMode mode : {accllm::LoadMode::kMap, accllm::LoadMode::kAnonymous}) {
    (void)accllm::LoadLlama2cModel(file.path(), {.mode = mode});
  }
  return 0;
}
