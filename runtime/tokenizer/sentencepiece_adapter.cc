#include "runtime/tokenizer/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

namespace accllm {

struct SentencePieceAdapter::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceAdapter::SentencePieceAdapter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceAdapter::~SentencePieceAdapter() = default;

std::unique_ptr<SentencePieceAdapter> SentencePieceAdapter::Load(const std::string& path,
                                                                 std::string* error) {
  auto impl = std::make_unique<Impl>();
  const sentencepiece::util::Status status = impl->processor.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceAdapter>(new SentencePieceAdapter(std::move(impl)));
}

bool SentencePieceAdapter::Encode(std::string_view text, std::vector<int>* ids,
                                  std::string* error) const {
  const sentencepiece::util::Status status = impl_->processor.Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int SentencePieceAdapter::vocab_size() const { return impl_->processor.GetPieceSize(); }
int SentencePieceAdapter::bos_id() const { return impl_->processor.bos_id(); }
int SentencePieceAdapter::eos_id() const { return impl_->processor.eos_id(); }
std::string SentencePieceAdapter::IdToPiece(int id) const { return impl_->processor.IdToPiece(id); }
bool SentencePieceAdapter::IsControl(int id) const { return impl_->processor.IsControl(id); }
bool SentencePieceAdapter::IsUnknown(int id) const { return impl_->processor.IsUnknown(id); }
bool SentencePieceAdapter::IsByte(int id) const { return impl_->processor.IsByte(id); }

}  // namespace accllm
