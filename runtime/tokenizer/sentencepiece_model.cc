#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "runtime/tokenizer/bpe_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_model.pb.h"

namespace accllm {

absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadSentencePieceModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream bytes;
  bytes << in.rdbuf();
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid sentencepiece model: ", what));
  };
  sentencepiece::ModelProto model;
  if (!model.ParseFromString(bytes.str())) return bad("not a ModelProto");
  if (model.pieces_size() < 3) return bad(absl::StrCat("only ", model.pieces_size(), " pieces"));
  if (model.trainer_spec().model_type() != sentencepiece::TrainerSpec::BPE) {
    return bad(absl::StrCat("model type ", sentencepiece::TrainerSpec::ModelType_Name(model.trainer_spec().model_type()),
                            " is not supported (BPE only)"));
  }
  const sentencepiece::NormalizerSpec& normalizer = model.normalizer_spec();
  if (!normalizer.precompiled_charsmap().empty()) {
    return bad("Unicode normalization rules (precompiled_charsmap) are not supported; the model must use identity");
  }
  if (!normalizer.escape_whitespaces()) return bad("escape_whitespaces = false is not supported");

  using Kind = BpeTokenizer::PieceKind;
  std::vector<BpeTokenizer::Piece> pieces;
  pieces.reserve(model.pieces_size());
  for (const auto& p : model.pieces()) {
    Kind kind = Kind::kNormal;
    switch (p.type()) {
      case sentencepiece::ModelProto::SentencePiece::UNKNOWN: kind = Kind::kUnknown; break;
      case sentencepiece::ModelProto::SentencePiece::CONTROL: kind = Kind::kControl; break;
      case sentencepiece::ModelProto::SentencePiece::UNUSED: kind = Kind::kUnused; break;
      case sentencepiece::ModelProto::SentencePiece::BYTE: kind = Kind::kByte; break;
      default: break;
    }
    pieces.push_back({absl::StrReplaceAll(p.piece(), {{"\xE2\x96\x81", " "}}), p.score(), kind});
  }
  BpeTokenizer::Options options;
  options.bos_id = model.trainer_spec().bos_id();
  options.eos_id = model.trainer_spec().eos_id();
  options.unk_id = model.trainer_spec().unk_id();
  options.add_dummy_prefix = normalizer.add_dummy_prefix();
  options.remove_extra_whitespaces = normalizer.remove_extra_whitespaces();
  options.unk_surface = model.trainer_spec().unk_surface();
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer = BpeTokenizer::Create(std::move(pieces), options);
  if (!tokenizer.ok()) return bad(std::string(tokenizer.status().message()));
  return tokenizer;
}

}  // namespace accllm
