// A thin wrapper over libsentencepiece that exposes only standard types.
//
// Why it exists: Debian's sentencepiece header declares `absl::string_view` as std::string_view,
// while Debian's abseil defines its own absl::string_view class, so the two headers cannot be
// included in one translation unit. sentencepiece_adapter.cc includes sentencepiece and no abseil.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace accllm {

class SentencePieceAdapter {
 public:
  // On failure returns null and sets *error.
  static std::unique_ptr<SentencePieceAdapter> Load(const std::string& path, std::string* error);
  ~SentencePieceAdapter();

  // On failure returns false and sets *error.
  bool Encode(std::string_view text, std::vector<int>* ids, std::string* error) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;

 private:
  struct Impl;
  explicit SentencePieceAdapter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace accllm
