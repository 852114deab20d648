// The tokenizer interface, and the loader that picks an implementation from the file.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace accllm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to token ids, with sentencepiece's dummy-prefix space; BOS first if `add_bos`.
  virtual absl::StatusOr<std::vector<int>> Encode(std::string_view text, bool add_bos) const = 0;

  // The bytes token `id` stands for: "▁" as a space, byte-fallback tokens <0xAB> as that raw
  // byte (possibly part of a multi-byte character), control tokens as nothing.
  virtual std::string TokenBytes(int id) const = 0;

  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;

  // Whole-sequence decode (the dummy-prefix space after BOS is dropped).
  std::string Decode(std::span<const int> ids) const;
};

// `.model` files are sentencepiece BPE models; anything else is read as llama2.c's tokenizer.bin.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

}  // namespace accllm
