#include "runtime/generate/generator.h"

#include "gmock/gmock.h"
#include "runtime/model/load_model.h"
#include "runtime/reference/reference_backend.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::testing::HasSubstr;

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(model_, LoadModel(RequireModelFile("stories260K.bin").string()));
    ASSERT_OK_AND_ASSIGN(tokenizer_, LoadTokenizer(RequireModelFile("tok512.bin").string()));
    backend_ = std::make_unique<ReferenceBackend>(*model_);
    ASSERT_OK_AND_ASSIGN(generator_, Generator::Create(*backend_, *tokenizer_));
  }

  static GenerationOptions Greedy(int max_new_tokens) {
    GenerationOptions options;
    options.sampling.temperature = 0.0f;
    options.max_new_tokens = max_new_tokens;
    return options;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ReferenceBackend> backend_;
  std::unique_ptr<Generator> generator_;
};

// Greedy text after "Once upon a time" (see the reference file):
// ", there was a little girl named Lily. She loved to play outside in the park. ..."

TEST_F(GeneratorTest, StreamedTextEqualsFinalText) {
  std::string streamed;
  int calls = 0;
  ASSERT_OK_AND_ASSIGN(GenerationResult r, generator_->Generate("Once upon a time", Greedy(40),
                                                                [&](int, std::string_view text) {
                                                                  streamed += text;
                                                                  ++calls;
                                                                  return true;
                                                                }));
  EXPECT_EQ(calls, 40);
  EXPECT_EQ(streamed, r.text);
  EXPECT_THAT(r.text, ::testing::StartsWith(", there was a little girl named Lily."));
  // With a prompt before them, the generated tokens decode to exactly the streamed text.
  std::vector<int> all = r.prompt_ids;
  all.insert(all.end(), r.generated_ids.begin(), r.generated_ids.end());
  EXPECT_EQ(tokenizer_->Decode(all), "Once upon a time" + r.text);
}

TEST_F(GeneratorTest, StopStringCutsTheOutputExactly) {
  GenerationOptions options = Greedy(100);
  options.stop_strings = {"Lily"};
  std::string streamed;
  ASSERT_OK_AND_ASSIGN(GenerationResult r, generator_->Generate("Once upon a time", options,
                                                                [&](int, std::string_view text) {
                                                                  streamed += text;
                                                                  return true;
                                                                }));
  EXPECT_EQ(r.finish_reason, FinishReason::kStopString);
  EXPECT_EQ(r.text, ", there was a little girl named ");
  EXPECT_EQ(streamed, r.text);
}

TEST_F(GeneratorTest, StopStringSpanningTokens) {
  GenerationOptions options = Greedy(100);
  options.stop_strings = {"d Lil"};  // "named" + " Lily" split across tokens
  ASSERT_OK_AND_ASSIGN(GenerationResult r, generator_->Generate("Once upon a time", options));
  EXPECT_EQ(r.finish_reason, FinishReason::kStopString);
  EXPECT_EQ(r.text, ", there was a little girl name");
}

TEST_F(GeneratorTest, StopTokenEndsGenerationWithoutItsText) {
  ASSERT_OK_AND_ASSIGN(std::vector<int> period, tokenizer_->Encode(".", false));
  const int period_id = period.back();
  GenerationOptions options = Greedy(100);
  options.stop_token_ids = {period_id};
  ASSERT_OK_AND_ASSIGN(GenerationResult r, generator_->Generate("Once upon a time", options));
  EXPECT_EQ(r.finish_reason, FinishReason::kStopToken);
  EXPECT_EQ(r.generated_ids.back(), period_id);
  EXPECT_EQ(r.text, ", there was a little girl named Lily");
}

TEST_F(GeneratorTest, CallbackCancels) {
  int calls = 0;
  ASSERT_OK_AND_ASSIGN(GenerationResult r, generator_->Generate("Once upon a time", Greedy(100),
                                                                [&](int, std::string_view) { return ++calls < 3; }));
  EXPECT_EQ(r.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(r.generated_ids.size(), 3u);
}

TEST_F(GeneratorTest, ContextFull) {
  ASSERT_OK_AND_ASSIGN(auto small, Generator::Create(*backend_, *tokenizer_, /*max_length=*/16));
  ASSERT_OK_AND_ASSIGN(GenerationResult r, small->Generate("Once upon a time", Greedy(100)));
  EXPECT_EQ(r.finish_reason, FinishReason::kContextFull);
  EXPECT_EQ(r.prompt_ids.size() + r.generated_ids.size(), 16u);
  // The same tokens as with the full context, up to where it ended.
  ASSERT_OK_AND_ASSIGN(GenerationResult full, generator_->Generate("Once upon a time", Greedy(11)));
  EXPECT_EQ(r.generated_ids, full.generated_ids);
}

TEST_F(GeneratorTest, SeededSamplingIsReproducible) {
  GenerationOptions options;
  options.sampling = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 77};
  options.max_new_tokens = 50;
  ASSERT_OK_AND_ASSIGN(GenerationResult a, generator_->Generate("Lily and Ben", options));
  ASSERT_OK_AND_ASSIGN(GenerationResult b, generator_->Generate("Lily and Ben", options));
  EXPECT_EQ(a.generated_ids, b.generated_ids);
  options.sampling.seed = 78;
  ASSERT_OK_AND_ASSIGN(GenerationResult c, generator_->Generate("Lily and Ben", options));
  EXPECT_NE(a.generated_ids, c.generated_ids);
}

TEST_F(GeneratorTest, BadRequestsAreRefusedWithClearErrors) {
  const auto expect_error = [&](std::span<const int> ids, const GenerationOptions& options, const std::string& what) {
    const auto r = generator_->Generate(ids, options);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(what));
  };
  const std::vector<int> ok_prompt = {1, 403};
  expect_error({}, Greedy(5), "no tokens");
  expect_error(std::vector<int>{1, 512}, Greedy(5), "prompt token id 512");
  expect_error(std::vector<int>{1, -3}, Greedy(5), "prompt token id -3");
  expect_error(std::vector<int>(512, 400), Greedy(5), "leaving no room");
  expect_error(ok_prompt, Greedy(0), "max_new_tokens");
  GenerationOptions options = Greedy(5);
  options.stop_strings = {""};
  expect_error(ok_prompt, options, "stop strings must not be empty");
  options = Greedy(5);
  options.stop_token_ids = {9999};
  expect_error(ok_prompt, options, "stop token id 9999");
  options = Greedy(5);
  options.sampling.top_p = 2.0f;
  expect_error(ok_prompt, options, "top_p");

  const auto bad_utf8 = generator_->Generate("bad \xC3", Greedy(5));
  ASSERT_FALSE(bad_utf8.ok());
  EXPECT_THAT(std::string(bad_utf8.status().message()), HasSubstr("UTF-8"));
}

}  // namespace
}  // namespace accllm
