#include "runtime/eval/corpus.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/io/mapped_file.h"
#include "runtime/tokenizer/utf8.h"

namespace accllm {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path, LoadMode::kAnonymous));
  return std::string(reinterpret_cast<const char*>(file->data()), file->size());
}

absl::StatusOr<LineRange> ParseLineRange(const std::string& spec) {
  const std::size_t colon = spec.find(':');
  LineRange range;
  const auto bad = absl::InvalidArgumentError(absl::StrCat("bad line range '", spec, "': expected A:B, A: or :B"));
  if (colon == std::string::npos) return bad;
  const std::string a = spec.substr(0, colon), b = spec.substr(colon + 1);
  if (!a.empty() && (!absl::SimpleAtoi(a, &range.begin) || range.begin < 0)) return bad;
  if (!b.empty() && (!absl::SimpleAtoi(b, &range.end) || range.end < range.begin)) return bad;
  return range;
}

absl::StatusOr<std::vector<std::vector<int>>> EncodeLines(const std::string& path, const Tokenizer& tokenizer,
                                                          const LineRange& lines) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<std::vector<int>> out;
  std::string line;
  int index = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const int current = index++;
    if (current < lines.begin || (lines.end >= 0 && current >= lines.end)) continue;
    if (!IsValidUtf8(line)) return absl::InvalidArgumentError(absl::StrCat(path, ": line ", current + 1, " is not valid UTF-8"));
    ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer.Encode(line, /*add_bos=*/true));
    out.push_back(std::move(ids));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no text lines in the selected range"));
  return out;
}

}  // namespace accllm
