// A sentencepiece `.model` tokenizer (libsentencepiece).
#pragma once

#include <memory>
#include <string>

#include "runtime/tokenizer/sentencepiece_adapter.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& path);

  absl::StatusOr<std::vector<int>> Encode(std::string_view text, bool add_bos) const override;
  std::string TokenBytes(int id) const override;
  int vocab_size() const override { return static_cast<int>(token_bytes_.size()); }
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }

 private:
  std::unique_ptr<SentencePieceAdapter> processor_;
  std::vector<std::string> token_bytes_;  // TokenBytes, precomputed per id
  int bos_id_ = -1;
  int eos_id_ = -1;
};

}  // namespace accllm
