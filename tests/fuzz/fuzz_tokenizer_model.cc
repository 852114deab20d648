// The sentencepiece .model reader and llama2.c's tokenizer.bin on arbitrary bytes; a tokenizer
// that loads must then encode and decode text without failing.
#include "runtime/tokenizer/bpe_tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  accllm::fuzz::InputFile file(data, size);
  for (auto load : {&accllm::LoadSentencePieceModel, &accllm::LoadLlama2cTokenizer}) {
    absl::StatusOr<std::unique_ptr<accllm::BpeTokenizer>> tokenizer = load(file.path());
    if (!tokenizer.ok()) continue;
    absl::StatusOr<std::vector<int>> ids = (*tokenizer)->Encode("Once upon a time, a café sold naïve tea.", true);
    if (!ids.ok()) std::abort();  // a loaded tokenizer encodes any valid UTF-8
    (void)(*tokenizer)->Decode(*ids);
  }
  return 0;
}
