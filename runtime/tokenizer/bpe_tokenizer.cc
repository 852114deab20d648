#include "runtime/tokenizer/bpe_tokenizer.h"

#include <cstdio>
#include <cstring>
#include <queue>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/io/mapped_file.h"
#include "runtime/tokenizer/utf8.h"

namespace accllm {
namespace {

// Parses "<0xAB>" into 0xAB, or returns -1.
int ParseByteToken(const std::string& piece) {
  unsigned value = 0;
  char tail = 0;
  if (piece.size() != 6 || std::sscanf(piece.c_str(), "<0x%2X%c", &value, &tail) != 2 || tail != '>') return -1;
  return static_cast<int>(value);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(std::vector<Piece> pieces, const Options& options) {
  const int n = static_cast<int>(pieces.size());
  for (int id : {options.bos_id, options.eos_id, options.unk_id}) {
    if (id < 0 || id >= n) return absl::InvalidArgumentError(absl::StrCat("special token id ", id, " is outside the vocabulary of ", n));
  }
  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  tok->options_ = options;
  tok->byte_to_id_.fill(-1);
  tok->byte_value_.assign(pieces.size(), -1);
  for (int id = 0; id < n; ++id) {
    const Piece& piece = pieces[id];
    const int byte = ParseByteToken(piece.text);
    if (byte >= 0 && (piece.kind == PieceKind::kByte || piece.kind == PieceKind::kNormal)) {
      tok->byte_value_[id] = byte;
      if (tok->byte_to_id_[byte] < 0) tok->byte_to_id_[byte] = id;
    } else if (piece.kind == PieceKind::kNormal) {
      tok->piece_to_id_.try_emplace(piece.text, id);  // first occurrence wins
    }
  }
  tok->pieces_ = std::move(pieces);
  return tok;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadLlama2cTokenizer(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const std::span<const std::byte> bytes = file->bytes();
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid llama2.c tokenizer: ", what));
  };
  std::size_t offset = 0;
  const auto read = [&](void* out, std::size_t n) {
    if (bytes.size() - offset < n) return false;
    std::memcpy(out, bytes.data() + offset, n);
    offset += n;
    return true;
  };

  int32_t max_token_length = 0;
  if (!read(&max_token_length, 4)) return bad("file is shorter than its 4-byte header");
  if (max_token_length <= 0 || max_token_length > 1024) {
    return bad(absl::StrCat("max_token_length ", max_token_length, " is out of range"));
  }
  std::vector<BpeTokenizer::Piece> pieces;
  while (offset < bytes.size()) {
    const std::size_t id = pieces.size();
    float score = 0;
    int32_t length = 0;
    if (!read(&score, 4) || !read(&length, 4)) return bad(absl::StrCat("token ", id, " is truncated"));
    if (length < 0 || length > max_token_length) {
      return bad(absl::StrCat("token ", id, " has length ", length, " (max_token_length ", max_token_length, ")"));
    }
    std::string text(static_cast<std::size_t>(length), '\0');
    if (!read(text.data(), text.size())) return bad(absl::StrCat("token ", id, " is truncated"));
    using Kind = BpeTokenizer::PieceKind;
    const Kind kind = id == 0 ? Kind::kUnknown : id <= 2 ? Kind::kControl : Kind::kNormal;
    pieces.push_back({std::move(text), score, kind});
  }
  if (pieces.size() < 3) return bad(absl::StrCat("only ", pieces.size(), " tokens"));
  return BpeTokenizer::Create(std::move(pieces), {});
}

absl::StatusOr<std::vector<int>> BpeTokenizer::Encode(std::string_view input, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos) ids.push_back(bos_id());
  std::string normalized(input);
  if (options_.remove_extra_whitespaces) {
    std::string collapsed;
    for (char c : normalized) {
      if (c == ' ' && (collapsed.empty() || collapsed.back() == ' ')) continue;
      collapsed.push_back(c);
    }
    while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
    normalized = std::move(collapsed);
  }
  const std::string_view text = normalized;
  if (text.empty()) return ids;

  // Symbols of the working sequence, as a doubly linked list over `symbols`.
  struct Symbol {
    int id;
    int prev, next;
    std::size_t begin, length;  // byte range in `work`
  };
  std::string work = options_.add_dummy_prefix ? " " : "";
  work.append(text);
  std::vector<Symbol> symbols;
  std::size_t i = 0;
  while (i < work.size()) {
    std::size_t len = 1;
    if (ScanUtf8(std::string_view(work).substr(i), &len) != Utf8Scan::kComplete) len = 1;
    const auto found = piece_to_id_.find(absl::string_view(work.data() + i, len));
    if (found != piece_to_id_.end()) {
      symbols.push_back({found->second, 0, 0, i, len});
    } else {
      for (std::size_t b = 0; b < len; ++b) {
        const int byte_id = byte_to_id_[static_cast<unsigned char>(work[i + b])];
        symbols.push_back({byte_id >= 0 ? byte_id : options_.unk_id, 0, 0, i + b, 1});
      }
    }
    i += len;
  }
  const int n = static_cast<int>(symbols.size());
  for (int s = 0; s < n; ++s) {
    symbols[s].prev = s - 1;
    symbols[s].next = s + 1 < n ? s + 1 : -1;
  }

  // Highest score first; among equal scores the leftmost pair (what a linear scan would pick).
  struct Candidate {
    float score;
    int left, right;
    std::size_t merged_length;
    int merged_id;
    bool operator<(const Candidate& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto consider = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    const auto found = piece_to_id_.find(absl::string_view(work.data() + a.begin, a.length + b.length));
    if (found == piece_to_id_.end()) return;
    queue.push({pieces_[found->second].score, left, right, a.length + b.length, found->second});
  };
  for (int s = 0; s + 1 < n; ++s) consider(s, s + 1);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& a = symbols[c.left];
    // Stale if either side was merged away or grew since the candidate was queued.
    if (a.length == 0 || a.next != c.right || symbols[c.right].length == 0 ||
        a.length + symbols[c.right].length != c.merged_length) {
      continue;
    }
    Symbol& b = symbols[c.right];
    a.id = c.merged_id;
    a.length += b.length;
    a.next = b.next;
    if (b.next >= 0) symbols[b.next].prev = c.left;
    b.length = 0;
    consider(a.prev, c.left);
    consider(c.left, a.next);
  }
  for (int s = 0; s >= 0 && s < n; s = symbols[s].next) ids.push_back(symbols[s].id);
  return ids;
}

std::string BpeTokenizer::TokenBytes(int id) const {
  if (id < 0 || id >= vocab_size()) return "";
  switch (pieces_[id].kind) {
    case PieceKind::kControl:
    case PieceKind::kUnused: return "";
    case PieceKind::kUnknown: return options_.unk_surface;
    default: break;
  }
  if (byte_value_[id] >= 0) return std::string(1, static_cast<char>(byte_value_[id]));
  return pieces_[id].text;
}

}  // namespace accllm
