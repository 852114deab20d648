// The calibration text of `quantize` and `refine`: chosen lines of a text file, tokenized.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace accllm::cli {

// Lines `lines` ("A:B") of `text`, tokenized with `tokenizer` (empty: the one beside the model at
// `model_path`), each with BOS first and cut to `max_tokens`. Prints what it read to stderr.
absl::StatusOr<std::vector<std::vector<int>>> ReadCalibrationSequences(const std::string& model_path, const std::string& tokenizer,
                                                                       int vocab_size, const std::string& text,
                                                                       const std::string& lines, int max_tokens);

}  // namespace accllm::cli
