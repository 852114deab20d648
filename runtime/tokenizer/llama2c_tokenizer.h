// llama2.c's tokenizer.bin: int32 max_token_length, then per token {float score, int32 length,
// bytes}. Encoding is sentencepiece-style BPE: start from characters (byte fallback for unknown
// ones) and repeatedly merge the adjacent pair whose merged piece has the highest score.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

class Llama2cTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> Load(const std::string& path);

  absl::StatusOr<std::vector<int>> Encode(std::string_view text, bool add_bos) const override;
  std::string TokenBytes(int id) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  // llama2.c's convention (from the sentencepiece export): 0 <unk>, 1 <s>, 2 </s>.
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }

 private:
  static constexpr int kUnkId = 0;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  absl::flat_hash_map<std::string, int> piece_to_id_;
  std::array<int, 256> byte_to_id_{};  // -1 where the vocabulary has no <0xXX> token
  std::vector<int> byte_value_;        // per id: the raw byte of a <0xXX> token, or -1
};

}  // namespace accllm
