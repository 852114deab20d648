// Greedy generation on stories260K must reproduce, token for token, the id sequences that
// llama2.c's run.c produced (../shared/reference/stories260K-greedy.md), through every loader.
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "runtime/generate/generator.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/llama2c_format.h"
#include "runtime/model/load_model.h"
#include "runtime/reference/reference_backend.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ReadFile;
using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;
using ::accllm::testing::ScratchDir;

struct ReferenceCase {
  std::string prompt;
  std::vector<int> ids;  // BOS, prompt tokens, generated tokens
};

// Sections look like:  ## "Once upon a time"  ...  IDS: 1 403 407 ...
std::vector<ReferenceCase> ParseReference(const std::string& markdown) {
  std::vector<ReferenceCase> cases;
  const std::regex heading("^## \"(.*)\"$");
  for (absl::string_view line : absl::StrSplit(markdown, '\n')) {
    const std::string text(line);
    std::smatch match;
    if (std::regex_match(text, match, heading)) {
      cases.push_back({match[1], {}});
    } else if (text.rfind("IDS: ", 0) == 0 && !cases.empty()) {
      for (absl::string_view field : absl::StrSplit(text.substr(5), ' ', absl::SkipEmpty())) {
        int id = 0;
        EXPECT_TRUE(absl::SimpleAtoi(field, &id)) << "bad id '" << field << "' in the reference";
        cases.back().ids.push_back(id);
      }
    }
  }
  return cases;
}

// The text the reference gives for the 256-step run from an empty prompt.
std::string LongRunText(const std::string& markdown) {
  const std::string marker = "the text begins:\n";
  const std::size_t start = markdown.find(marker);
  if (start == std::string::npos) return "";
  std::string text = markdown.substr(start + marker.size());
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

class ReferenceGreedyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    markdown_ = ReadFile(RequireSharedFile("reference/stories260K-greedy.md"));
    cases_ = ParseReference(markdown_);
    ASSERT_EQ(cases_.size(), 2u) << "expected two prompts in the reference file";
  }

  // Checks every reference case on `model` with `tokenizer`.
  void ExpectMatchesReference(const Model& model, const Tokenizer& tokenizer) {
    ReferenceBackend backend(model);
    ASSERT_OK_AND_ASSIGN(auto generator, Generator::Create(backend, tokenizer));
    for (const ReferenceCase& c : cases_) {
      SCOPED_TRACE(c.prompt);
      ASSERT_OK_AND_ASSIGN(std::vector<int> prompt, tokenizer.Encode(c.prompt, /*add_bos=*/true));
      ASSERT_LT(prompt.size(), c.ids.size());
      EXPECT_THAT(prompt, ::testing::ElementsAreArray(c.ids.begin(), c.ids.begin() + prompt.size()));
      // 64 positions are run; the last one's logits give the final id.
      EXPECT_EQ(c.ids.size(), 65u);
      GenerationOptions options;
      options.sampling.temperature = 0.0f;
      options.max_new_tokens = static_cast<int>(c.ids.size() - prompt.size());
      ASSERT_OK_AND_ASSIGN(GenerationResult result, generator->Generate(prompt, options));
      std::vector<int> all = result.prompt_ids;
      all.insert(all.end(), result.generated_ids.begin(), result.generated_ids.end());
      EXPECT_EQ(all, c.ids);
      EXPECT_EQ(result.finish_reason, FinishReason::kMaxTokens);
    }
  }

  std::string markdown_;
  std::vector<ReferenceCase> cases_;
};

TEST_F(ReferenceGreedyTest, LegacyBinWithLlama2cTokenizer) {
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(RequireModelFile("stories260K.bin").string()));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  ExpectMatchesReference(*model, *tokenizer);
}

TEST_F(ReferenceGreedyTest, LegacyBinWithSentencePieceTokenizer) {
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(RequireModelFile("stories260K.bin").string()));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.model").string()));
  ExpectMatchesReference(*model, *tokenizer);
}

TEST_F(ReferenceGreedyTest, AnonymousLoadMode) {
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(RequireModelFile("stories260K.bin").string(), {.mode = LoadMode::kAnonymous}));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  ExpectMatchesReference(*model, *tokenizer);
}

TEST_F(ReferenceGreedyTest, VersionedAk42Export) {
  ASSERT_OK_AND_ASSIGN(auto source, LoadModel(RequireModelFile("stories260K.bin").string()));
  ScratchDir dir;
  const std::string path = (dir / "stories260K-v1.bin").string();
  ASSERT_OK(WriteLlama2cModel(ModelWeightSource(*source), path, Llama2cVersion::kV1));
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(path));
  EXPECT_EQ(model->format, ModelFormat::kLlama2cV1);
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  ExpectMatchesReference(*model, *tokenizer);
}

// A Hugging Face checkpoint written from the stories260K weights (q/k rows permuted to HF order,
// F32, sharded, with the sentencepiece tokenizer) gives the same tokens as the .bin.
TEST_F(ReferenceGreedyTest, HuggingFaceCheckpointF32Sharded) {
  ASSERT_OK_AND_ASSIGN(auto source, LoadModel(RequireModelFile("stories260K.bin").string()));
  ScratchDir dir;
  ASSERT_OK(WriteHfCheckpoint(ModelWeightSource(*source), dir.path().string(),
                              {.dtype = DType::kF32, .max_shard_bytes = 300 * 1024}));
  std::filesystem::copy_file(RequireModelFile("tok512.model"), dir / "tokenizer.model");
  ASSERT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));

  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(dir.path().string()));
  EXPECT_EQ(model->format, ModelFormat::kHfSafetensors);
  ASSERT_OK_AND_ASSIGN(std::string tokenizer_path, DefaultTokenizerPath(model->path, model->config.vocab_size));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(tokenizer_path));
  ExpectMatchesReference(*model, *tokenizer);
}

TEST_F(ReferenceGreedyTest, LongRunFromEmptyPrompt) {
  const std::string expected = LongRunText(markdown_);
  ASSERT_GT(expected.size(), 200u);
  ASSERT_OK_AND_ASSIGN(auto model, LoadModel(RequireModelFile("stories260K.bin").string()));
  ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
  ReferenceBackend backend(*model);
  ASSERT_OK_AND_ASSIGN(auto generator, Generator::Create(backend, *tokenizer));
  GenerationOptions options;
  options.sampling.temperature = 0.0f;
  options.max_new_tokens = 256;
  std::string streamed;
  ASSERT_OK_AND_ASSIGN(GenerationResult result,
                       generator->Generate("", options, [&](int, std::string_view text) {
                         streamed += text;
                         return true;
                       }));
  EXPECT_EQ(result.prompt_ids, std::vector<int>{tokenizer->bos_id()});
  EXPECT_EQ(streamed, result.text);
  EXPECT_EQ(result.text.substr(0, expected.size()), expected);
}

}  // namespace
}  // namespace accllm
