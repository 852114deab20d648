#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace accllm {

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& path) {
  std::string error;
  auto processor = SentencePieceAdapter::Load(path, &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot load sentencepiece model: ", error));
  }
  auto tok = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
  tok->bos_id_ = processor->bos_id();
  tok->eos_id_ = processor->eos_id();
  const int n = processor->vocab_size();
  tok->token_bytes_.resize(static_cast<std::size_t>(n));
  for (int id = 0; id < n; ++id) {
    const std::string piece = processor->IdToPiece(id);
    unsigned byte = 0;
    if (processor->IsControl(id)) {
      continue;
    } else if (processor->IsByte(id) && std::sscanf(piece.c_str(), "<0x%2X>", &byte) == 1) {
      tok->token_bytes_[id] = std::string(1, static_cast<char>(byte));
    } else if (processor->IsUnknown(id)) {
      tok->token_bytes_[id] = " \xE2\x81\x87 ";  // sentencepiece's surface for <unk>: " ⁇ "
    } else {
      tok->token_bytes_[id] = absl::StrReplaceAll(piece, {{"\xE2\x96\x81", " "}});  // "▁" -> " "
    }
  }
  tok->processor_ = std::move(processor);
  return tok;
}

absl::StatusOr<std::vector<int>> SentencePieceTokenizer::Encode(std::string_view text,
                                                                bool add_bos) const {
  std::vector<int> pieces;
  std::string error;
  if (!processor_->Encode(text, &pieces, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("sentencepiece cannot encode the text: ", error));
  }
  std::vector<int> ids;
  ids.reserve(pieces.size() + 1);
  if (add_bos) ids.push_back(bos_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string SentencePieceTokenizer::TokenBytes(int id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return token_bytes_[static_cast<std::size_t>(id)];
}

}  // namespace accllm
