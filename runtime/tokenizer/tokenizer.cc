#include "runtime/tokenizer/tokenizer.h"

#include "runtime/tokenizer/bpe_tokenizer.h"
#include "runtime/tokenizer/stream_detokenizer.h"

namespace accllm {

std::string Tokenizer::Decode(std::span<const int> ids) const {
  StreamDetokenizer detokenizer(*this, bos_id());
  std::string text;
  for (int id : ids) text += detokenizer.Push(id);
  return text + detokenizer.Flush();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (path.ends_with(".model")) return LoadSentencePieceModel(path);
  return LoadLlama2cTokenizer(path);
}

}  // namespace accllm
