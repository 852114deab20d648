#include "tools/accllm/calibration_text.h"

#include <cstdio>

#include "runtime/common/status_macros.h"
#include "runtime/eval/corpus.h"
#include "runtime/model/load_model.h"

namespace accllm::cli {

absl::StatusOr<std::vector<std::vector<int>>> ReadCalibrationSequences(const std::string& model_path, const std::string& tokenizer,
                                                                       int vocab_size, const std::string& text,
                                                                       const std::string& lines, int max_tokens) {
  std::string tokenizer_path = tokenizer;
  if (tokenizer_path.empty()) {
    ASSIGN_OR_RETURN(tokenizer_path, DefaultTokenizerPath(model_path, vocab_size));
  }
  ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> loaded, LoadTokenizer(tokenizer_path));
  ASSIGN_OR_RETURN(const LineRange range, ParseLineRange(lines));
  ASSIGN_OR_RETURN(std::vector<std::vector<int>> sequences, EncodeLines(text, *loaded, range));
  int64_t tokens = 0;
  for (auto& s : sequences) {
    if (static_cast<int>(s.size()) > max_tokens) s.resize(max_tokens);
    tokens += static_cast<int64_t>(s.size());
  }
  std::fprintf(stderr, "calibration text: %zu sequences, %lld tokens of %s\n", sequences.size(), static_cast<long long>(tokens),
               text.c_str());
  return sequences;
}

}  // namespace accllm::cli
