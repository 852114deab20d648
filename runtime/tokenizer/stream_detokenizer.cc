#include "runtime/tokenizer/stream_detokenizer.h"

#include "runtime/tokenizer/utf8.h"

namespace accllm {

std::string StreamDetokenizer::Push(int id) {
  std::string bytes = tokenizer_.TokenBytes(id);
  if (previous_ == tokenizer_.bos_id() && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
  previous_ = id;
  pending_ += bytes;
  return TakeCompleteUtf8(pending_);
}

std::string StreamDetokenizer::Flush() {
  std::string out = TakeCompleteUtf8(pending_);
  if (!pending_.empty()) out += kReplacementChar;
  pending_.clear();
  return out;
}

}  // namespace accllm
