// A regression guard on 2-bit quality (not a benchmark): gutenberg30M quantized with the best
// recipe measured (`quantize --rotate --block-ap`: residual rotation, GPTQ at group 128, then block-wise
// reconstruction) on a small calibration set, scored on a fixed slice
// of the dev text in llama-perplexity's convention, must stay within a bound of fp32 on the same
// slice. The full figures are in docs/QUALITY.md (scripts/quality.sh).
#include <cmath>

#include "gmock/gmock.h"
#include "runtime/common/status_macros.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/eval/corpus.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/weight_variants.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/rotation.h"
#include "runtime/quant/train/block_ap.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;

// Measured 2026-11-30 on this slice with half-step zero points (format 2): fp32 21.68, GPTQ alone
// 27.67 (ratio 1.276), with Block-AP 26.32 (ratio 1.214); whole-step zeros gave 30.40 and 27.62.
// With the cosine schedule at twice the peak and GPTQ in float (2026-12-01): GPTQ 27.68 (1.276),
// Block-AP 25.93 (1.196).
// The bounds leave room for float-order differences between CPU paths and BLAS builds, not for a
// regression.
constexpr double kMaxGptqPerplexityRatio = 1.33;
constexpr double kMaxW2PerplexityRatio = 1.26;

absl::StatusOr<double> SlicePerplexity(EngineWeights weights, const std::vector<int>& tokens, int bos) {
  CpuEngineOptions options;
  options.kv_precision = KvPrecision::kF32;
  options.max_step_tokens = 256;
  ASSIGN_OR_RETURN(std::unique_ptr<CpuEngine> engine, CpuEngine::Create(std::move(weights), options));
  ChunkedPerplexityOptions chunks;
  chunks.context = 512;
  chunks.chunks = 4;
  ASSIGN_OR_RETURN(ChunkedPerplexity result, ScoreChunks(*engine, tokens, bos, chunks));
  return result.perplexity();
}

TEST(QualityGuardTest, BestRecipeStaysWithinBoundOfFp32OnADevSlice) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> model, LoadModel(RequireModelFile("gutenberg30M").string()));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tokenizer,
                       LoadTokenizer((RequireModelFile("gutenberg30M") / "tokenizer.model").string()));
  std::string dev = ::accllm::testing::ReadFile(RequireSharedFile("data/gutenberg-dev.txt"));
  dev.resize(20000);  // about 4.5 chunks of 512 tokens
  ASSERT_OK_AND_ASSIGN(std::vector<int> tokens, tokenizer->Encode(dev, /*add_bos=*/true));
  ASSERT_OK_AND_ASSIGN(std::vector<std::vector<int>> calibration,
                       EncodeLines(RequireSharedFile("data/gutenberg-calib.txt").string(), *tokenizer, {0, 16}));
  for (auto& line : calibration) line.resize(std::min<std::size_t>(line.size(), model->config.max_seq_len));

  ASSERT_OK_AND_ASSIGN(double fp32, SlicePerplexity(EngineWeightsFromModel(*model), tokens, tokenizer->bos_id()));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> rotated, RotateResidualStream(*model, 1));
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*rotated, calibration));
  std::vector<std::vector<float>> positions;
  ASSERT_OK_AND_ASSIGN(PackedContents packed, QuantizeModel(*rotated, QuantizeOptions{}, &stats, nullptr, &positions));
  ASSERT_OK_AND_ASSIGN(double gptq, SlicePerplexity(DequantizedWeights(packed), tokens, tokenizer->bos_id()));
  BlockApOptions block_ap;
  block_ap.epochs = 2;  // half the default: the guard's figure is for 2 (it bounds the test command's time)
  ASSERT_OK(RefineBlocks(*rotated, calibration, block_ap, packed, positions));
  ASSERT_OK_AND_ASSIGN(double w2, SlicePerplexity(DequantizedWeights(packed), tokens, tokenizer->bos_id()));
  std::printf("fp32 %.3f, GPTQ %.3f (ratio %.3f), + Block-AP %.3f (ratio %.3f)\n", fp32, gptq, gptq / fp32, w2, w2 / fp32);
  EXPECT_GT(fp32, 5.0);
  EXPECT_LT(fp32, 60.0);
  EXPECT_LT(gptq / fp32, kMaxGptqPerplexityRatio);
  EXPECT_LT(w2 / fp32, kMaxW2PerplexityRatio);
}

}  // namespace
}  // namespace accllm
