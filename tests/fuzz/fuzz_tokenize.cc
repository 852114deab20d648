// Encoding arbitrary text with a real tokenizer (tok512.model, sentencepiece BPE with byte
// fallback), then streaming the ids back to text: for valid UTF-8 the text comes back.
#include <cstdio>

#include "runtime/tokenizer/bpe_tokenizer.h"
#include "runtime/tokenizer/stream_detokenizer.h"
#include "runtime/tokenizer/utf8.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const accllm::BpeTokenizer* tokenizer = [] {
    auto loaded = accllm::LoadSentencePieceModel(accllm::fuzz::ModelsDir() + "/tok512.model");
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
      std::abort();
    }
    return loaded->release();
  }();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::vector<int>> ids = tokenizer->Encode(text, /*add_bos=*/true);
  if (!accllm::IsValidUtf8(text)) return 0;  // (the server refuses such text before encoding)
  if (!ids.ok()) std::abort();
  accllm::StreamDetokenizer detokenizer(*tokenizer, ids->front());
  std::string streamed;
  for (std::size_t i = 1; i < ids->size(); ++i) streamed += detokenizer.Push((*ids)[i]);
  streamed += detokenizer.Flush();
  if (!accllm::IsValidUtf8(streamed)) std::abort();
  return 0;
}
