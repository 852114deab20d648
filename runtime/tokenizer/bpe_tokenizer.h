// A sentencepiece-style BPE tokenizer: start from characters (byte fallback for unknown ones)
// and repeatedly merge the adjacent pair whose merged piece has the highest score. Both
// llama2.c's tokenizer.bin and sentencepiece BPE .model files load into it.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

class BpeTokenizer final : public Tokenizer {
 public:
  enum class PieceKind { kNormal, kUnknown, kControl, kByte, kUnused };
  struct Piece {
    std::string text;  // with spaces, not sentencepiece's "▁"; "<0xAB>" for byte pieces
    float score = 0;
    PieceKind kind = PieceKind::kNormal;
  };
  struct Options {
    int bos_id = 1;
    int eos_id = 2;
    int unk_id = 0;
    bool add_dummy_prefix = true;          // encode " " + text
    bool remove_extra_whitespaces = false; // strip ends, collapse runs of spaces (sentencepiece's default)
    std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ "
  };

  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(std::vector<Piece> pieces, const Options& options);

  absl::StatusOr<std::vector<int>> Encode(std::string_view text, bool add_bos) const override;
  std::string TokenBytes(int id) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos_id() const override { return options_.bos_id; }
  int eos_id() const override { return options_.eos_id; }

 private:
  std::vector<Piece> pieces_;
  Options options_;
  absl::flat_hash_map<std::string, int> piece_to_id_;  // normal and user pieces only
  std::array<int, 256> byte_to_id_{};                   // -1 where there is no <0xXX> piece
  std::vector<int> byte_value_;                         // per id: the byte of a <0xXX> piece, or -1
};

// llama2.c's tokenizer.bin: int32 max_token_length, then per token {float score, int32 length,
// bytes}. Ids 0, 1, 2 are <unk>, <s>, </s> (the sentencepiece export's convention).
absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadLlama2cTokenizer(const std::string& path);

// A sentencepiece .model file (a ModelProto) of model type BPE.
absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadSentencePieceModel(const std::string& path);

}  // namespace accllm
