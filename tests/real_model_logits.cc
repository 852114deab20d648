#include "tests/real_model_logits.h"

#include <algorithm>
#include <cstring>

#include "gtest/gtest.h"
#include "runtime/model/load_model.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/test_support.h"

namespace accllm::testing {

absl::StatusOr<AnyModel> PackedGutenberg30M(const std::filesystem::path& dir) {
  absl::StatusOr<std::unique_ptr<Model>> fp32 = LoadModel(RequireModelFile("gutenberg30M").string());
  if (!fp32.ok()) return fp32.status();
  QuantizeOptions options;
  options.method = QuantMethod::kRtn;
  options.source = "gutenberg30M";
  absl::StatusOr<PackedContents> packed = QuantizeModel(**fp32, options, nullptr, nullptr);
  if (!packed.ok()) return packed.status();
  const std::string path = (dir / "gutenberg30M-rtn.safetensors").string();
  if (absl::Status s = WritePackedModel(*packed, path); !s.ok()) return s;
  return LoadAnyModel(path, LoadMode::kMap);
}

absl::StatusOr<std::vector<int>> GutenbergDevPrompt(int tokens) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer((RequireModelFile("gutenberg30M") / "tokenizer.model").string());
  if (!tokenizer.ok()) return tokenizer.status();
  const std::string text = ReadFile(RequireSharedFile("data/gutenberg-dev.txt"));
  absl::StatusOr<std::vector<int>> ids = (*tokenizer)->Encode(text.substr(0, 16 * tokens), /*add_bos=*/true);
  if (!ids.ok()) return ids.status();
  if (static_cast<int>(ids->size()) < tokens) return absl::FailedPreconditionError("the dev text is too short");
  ids->resize(tokens);
  return ids;
}

std::vector<std::vector<float>> GreedyLogits(Backend& backend, const std::vector<int>& prompt, int steps) {
  const int vocab = backend.config().vocab_size;
  std::vector<std::vector<float>> out(1, std::vector<float>(vocab));
  auto seq = backend.NewSequence();
  const absl::Status prefilled = backend.Prefill(*seq, prompt, out.back());
  EXPECT_TRUE(prefilled.ok()) << prefilled;
  for (int step = 0; step < steps && prefilled.ok(); ++step) {
    const std::vector<float>& last = out.back();
    const int next = static_cast<int>(std::max_element(last.begin(), last.end()) - last.begin());
    out.emplace_back(vocab);
    SequenceKv* seqs[] = {seq.get()};
    const int tokens[] = {next};
    const absl::Status decoded = backend.Decode(seqs, tokens, out.back());
    EXPECT_TRUE(decoded.ok()) << decoded;
  }
  return out;
}

void ExpectSameLogits(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t step = 0; step < got.size(); ++step) {
    ASSERT_EQ(got[step].size(), want[step].size());
    ASSERT_EQ(std::memcmp(got[step].data(), want[step].data(), got[step].size() * sizeof(float)), 0)
        << "the logits differ from step " << step << " on";
  }
}

}  // namespace accllm::testing
