#include "tools/accllm/int_list.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace accllm {

absl::StatusOr<std::vector<int64_t>> ParsePositiveList(absl::string_view text, absl::string_view what, int64_t max,
                                                       bool zero_means_none) {
  if (zero_means_none && absl::StripAsciiWhitespace(text) == "0") return std::vector<int64_t>{};
  std::vector<int64_t> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(item, &v) || v < 1 || v > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad ", what, " '", item, "': want integers from 1 to ", max, zero_means_none ? " (or 0: none)" : ""));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("no ", what, " given"));
  return out;
}

}  // namespace accllm
