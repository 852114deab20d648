// Perplexity in llama-perplexity's convention: the CPU engine's batched scoring against the fp32
// reference forward pass, and the convention itself (which tokens are scored, BOS per chunk).
#include "runtime/eval/perplexity.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "runtime/common/status_macros.h"
#include "runtime/engine/backend_factory.h"
#include "runtime/reference/reference_backend.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;

// The first `bytes` of a text file.
std::string Head(const std::filesystem::path& path, std::size_t bytes) {
  std::string text = ::accllm::testing::ReadFile(path);
  text.resize(std::min(bytes, text.size()));
  return text;
}

// A backend that records what it is asked and answers with logits that put probability
// 1/2 on `favourite` and spread the rest evenly.
class RecordingBackend final : public Backend {
 public:
  explicit RecordingBackend(int favourite) : favourite_(favourite), pool_(64) {
    config_.vocab_size = 8;
    config_.max_seq_len = 64;
  }
  std::string name() const override { return "recording"; }
  const LlamaConfig& config() const override { return config_; }
  const LambdaConfig& lambda() const override { return lambda_; }
  int page_tokens() const override { return 16; }
  PagePool& page_pool() override { return pool_; }
  int max_step_tokens() const override { return 3; }
  absl::Status Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) override {
    fed_.insert(fed_.end(), tokens.begin(), tokens.end());
    if (seq.length() == 0) starts_.push_back(tokens[0]);
    RETURN_IF_ERROR(seq.Reserve(static_cast<int>(tokens.size())));
    seq.Advance(static_cast<int>(tokens.size()));
    // p(favourite) = 1/2, others 1/14: logit log 7 over 0.
    for (int v = 0; v < 8; ++v) logits[v] = v == favourite_ ? std::log(7.0f) : 0.0f;
    return absl::OkStatus();
  }
  absl::Status Decode(std::span<SequenceKv* const>, std::span<const int>, std::span<float>) override {
    return absl::UnimplementedError("not used");
  }
  std::vector<int> fed_, starts_;

 private:
  int favourite_;
  LlamaConfig config_;
  LambdaConfig lambda_;
  PagePool pool_;
};

TEST(ChunkedPerplexityTest, ScoresTheSecondHalfOfEachChunkWithBosFirst) {
  RecordingBackend backend(/*favourite=*/3);
  // 2.5 chunks of 8 tokens: the half chunk at the end is not scored.
  const std::vector<int> tokens = {1, 3, 3, 5, 3, 3, 3, 5,  6, 3, 3, 3, 3, 5, 5, 3,  2, 2, 2, 2};
  ChunkedPerplexityOptions options;
  options.context = 8;
  ASSERT_OK_AND_ASSIGN(ChunkedPerplexity result, ScoreChunks(backend, tokens, /*bos=*/1, options));
  EXPECT_EQ(result.chunks, 2);
  // Per chunk, positions 4..6 predict tokens 5..7: chunk 1 predicts 3, 3, 5; chunk 2 predicts 5, 5, 3.
  EXPECT_EQ(result.count, 6);
  const double favourite = -std::log(0.5), other = -std::log(1.0 / 14);
  EXPECT_NEAR(result.nll, 3 * favourite + 3 * other, 1e-5);
  EXPECT_NEAR(result.perplexity(), std::exp((3 * favourite + 3 * other) / 6), 1e-5);
  EXPECT_GT(result.uncertainty(), 0.0);
  // Every chunk starts a fresh sequence with BOS in place of its first token, in steps of 3.
  EXPECT_THAT(backend.starts_, ::testing::ElementsAre(1, 1));
  EXPECT_EQ(backend.fed_.size(), 16u);
  EXPECT_EQ(backend.fed_[8], 1);  // the second chunk's 6 became BOS

  options.chunks = 1;
  ASSERT_OK_AND_ASSIGN(result, ScoreChunks(backend, tokens, 1, options));
  EXPECT_EQ(result.chunks, 1);
  EXPECT_EQ(result.count, 3);
}

TEST(ChunkedPerplexityTest, RefusesTextShorterThanAChunk) {
  RecordingBackend backend(0);
  const std::vector<int> tokens(7, 2);
  ChunkedPerplexityOptions options;
  options.context = 8;
  const auto result = ScoreChunks(backend, tokens, 1, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), ::testing::HasSubstr("fewer than one chunk"));
}

// gutenberg30M on a slice of the dev text: the CPU engine (fp32 weights, fp32 KV, chunks of
// 128 in steps of 48 with every logit) against the fp32 reference forward pass, token by token.
TEST(ChunkedPerplexityTest, TheEngineScoresWhatTheReferenceForwardPassScores) {
  BackendOptions engine_options;
  engine_options.engine = "cpu";
  engine_options.kv = "f32";
  engine_options.max_step_tokens = 48;
  ASSERT_OK_AND_ASSIGN(AnyModel model, LoadAnyModel(RequireModelFile("gutenberg30M").string(), LoadMode::kMap));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizerFor(model, ""));
  ASSERT_OK_AND_ASSIGN(std::vector<int> tokens,
                       tokenizer->Encode(Head(RequireSharedFile("data/gutenberg-dev.txt"), 2000), /*add_bos=*/true));
  ASSERT_GE(tokens.size(), 256u);
  ChunkedPerplexityOptions options;
  options.context = 128;
  options.chunks = 2;

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Backend> engine, MakeBackend(engine_options, model));
  ASSERT_OK_AND_ASSIGN(ChunkedPerplexity fast, ScoreChunks(*engine, tokens, tokenizer->bos_id(), options));
  ReferenceBackend reference(*model.fp32);
  ASSERT_OK_AND_ASSIGN(ChunkedPerplexity oracle, ScoreChunks(reference, tokens, tokenizer->bos_id(), options));
  EXPECT_EQ(fast.count, 2 * 63);
  EXPECT_EQ(oracle.count, fast.count);
  EXPECT_NEAR(fast.perplexity(), oracle.perplexity(), 1e-4 * oracle.perplexity());
  // A real model on real prose: far better than chance (4096) and not degenerate.
  EXPECT_GT(oracle.perplexity(), 3.0);
  EXPECT_LT(oracle.perplexity(), 200.0);
}

}  // namespace
}  // namespace accllm
