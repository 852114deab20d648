// gutenberg30M for the tests that hold devices to one set of logits: the model quantized as a
// user would (RTN, `accllm quantize --method rtn`), a prompt of held-out text, and the logits of
// prefilling it and decoding greedily.
#pragma once

#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/backend_factory.h"

namespace accllm::testing {

// gutenberg30M, RTN-quantized into `dir` and loaded from there.
absl::StatusOr<AnyModel> PackedGutenberg30M(const std::filesystem::path& dir);

// The first `tokens` tokens (BOS first) of the dev text, which the model never saw.
absl::StatusOr<std::vector<int>> GutenbergDevPrompt(int tokens);

// The logits after `prompt` and after each of `steps` greedy decode steps.
std::vector<std::vector<float>> GreedyLogits(Backend& backend, const std::vector<int>& prompt, int steps);

// Fails the current test at the first step whose logits differ in any bit.
void ExpectSameLogits(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want);

}  // namespace accllm::testing
