// Text files whole, or as token sequences: one sequence per non-empty line (a story), each
// starting with BOS, as the models were trained.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

struct LineRange {
  int begin = 0;
  int end = -1;  // exclusive; -1 = to the end
};

// A whole text file (what llama-perplexity's convention tokenizes at once).
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// Parses "A:B", "A:" or ":B" (0-based, end exclusive).
absl::StatusOr<LineRange> ParseLineRange(const std::string& spec);

absl::StatusOr<std::vector<std::vector<int>>> EncodeLines(const std::string& path, const Tokenizer& tokenizer,
                                                          const LineRange& lines = {});

}  // namespace accllm
