#include "runtime/tokenizer/tokenizer.h"

#include "runtime/tokenizer/llama2c_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"
#include "runtime/tokenizer/stream_detokenizer.h"

namespace accllm {

std::string Tokenizer::Decode(std::span<const int> ids) const {
  StreamDetokenizer detokenizer(*this, bos_id());
  std::string text;
  for (int id : ids) text += detokenizer.Push(id);
  return text + detokenizer.Flush();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (path.size() >= 6 && path.ends_with(".model")) return SentencePieceTokenizer::Load(path);
  return Llama2cTokenizer::Load(path);
}

}  // namespace accllm
