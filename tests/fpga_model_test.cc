// The U280 performance model: its arithmetic, its limits, and where it stands against the
// published Llama-2-7B figure.
#include "fpga/model/perf_model.h"

#include "gmock/gmock.h"
#include "tests/test_support.h"

namespace accllm::fpga {
namespace {

Workload Llama7b(int batch, int context, int window = 0) {
  Workload w;
  w.config = *ParseShape("llama2-7b");
  w.batch = batch;
  w.context = context;
  w.window = window;
  return w;
}

TEST(FpgaModelTest, BytesAndRooflineFollowTheFormat) {
  const Estimate e = EstimateAccelerator({}, {}, Llama7b(1, 1024));
  // W2 at group 128: 2 bits per weight + 3 bytes per 128 weights, and the fp16 classifier.
  const double linear = 32.0 * (2 * 4096.0 * 4096 + 2 * 4096.0 * 4096 + 3 * 4096.0 * 11008);
  EXPECT_NEAR(e.weight_bytes, linear / 4 + linear / 128 * 3 + 2.0 * 32000 * 4096, 1.0);
  // KV4: K and V, 64 bytes of codes + 4 bytes of scale/min per head per layer, 1024 tokens.
  EXPECT_NEAR(e.kv_bytes, 1024.0 * 32 * 2 * (2048 + 4 * 32), 1.0);
  EXPECT_NEAR(e.hbm_roofline_tokens_per_s, 460e9 / (e.weight_bytes + e.kv_bytes), 1e-6);
  EXPECT_LT(e.tokens_per_s, e.hbm_roofline_tokens_per_s);
  EXPECT_TRUE(e.fits);
}

// The host's starts per step as built (every unit of every layer), and what the sequencer (one
// start per step) would save. Not a fit to the published figures: those are listed beside the
// model's, not used to set it.
TEST(FpgaModelTest, TheHostDrivenFlowPaysForItsStarts) {
  const Estimate host = EstimateAccelerator({}, {}, Llama7b(1, 128));
  AcceleratorDesign sequenced;
  sequenced.sequencer = true;
  const Estimate one_start = EstimateAccelerator({}, sequenced, Llama7b(1, 128));
  // 24 units x 7 linear layers + 2 attention units, per layer.
  EXPECT_EQ(host.launches, 32 * (24 * 7 + 2));
  EXPECT_EQ(one_start.launches, 1);
  EXPECT_NEAR(host.overhead_ms, 32 * 8 * 0.015, 1e-9);
  EXPECT_GT(one_start.tokens_per_s, host.tokens_per_s);
  EXPECT_LT(one_start.tokens_per_s, one_start.hbm_roofline_tokens_per_s);
  EXPECT_EQ(host.linear_ms, one_start.linear_ms);
  EXPECT_GT(host.watts, 19.0);  // above the static power, whatever the rates
}

TEST(FpgaModelTest, LambdaBoundsAttentionAndBatchingAndCardsScale) {
  const Estimate full = EstimateAccelerator({}, {}, Llama7b(1, 16384));
  const Estimate lambda = EstimateAccelerator({}, {}, Llama7b(1, 16384, 1024));
  const Estimate short_context = EstimateAccelerator({}, {}, Llama7b(1, 1028));
  EXPECT_GT(lambda.tokens_per_s, 3 * full.tokens_per_s);
  EXPECT_NEAR(lambda.tokens_per_s, short_context.tokens_per_s, 1e-9);  // a window of 1024 + 4 sinks

  double previous = 0;
  for (int batch : {1, 2, 4, 8, 16}) {
    const double t = EstimateAccelerator({}, {}, Llama7b(batch, 256, 256)).tokens_per_s;
    EXPECT_GT(t, previous) << batch;
    previous = t;
  }
  // Up to the token lanes a batch shares each weight read: batch 4 costs about one weight pass
  // (a call stages and writes 4 tokens instead of 1), batch 8 two.
  const Estimate b1 = EstimateAccelerator({}, {}, Llama7b(1, 256)), b4 = EstimateAccelerator({}, {}, Llama7b(4, 256));
  const Estimate b8 = EstimateAccelerator({}, {}, Llama7b(8, 256));
  EXPECT_LT(b4.linear_ms, 1.1 * b1.linear_ms);
  EXPECT_GT(b8.linear_ms, 1.9 * b4.linear_ms);

  Workload four = Llama7b(4, 256);
  four.cards = 4;
  EXPECT_NEAR(EstimateAccelerator({}, {}, four).tokens_per_s, 4 * b4.tokens_per_s, 1e-6);
}

TEST(FpgaModelTest, DesignsBeyondTheChipDoNotFit) {
  AcceleratorDesign big;
  big.token_lanes = 8;  // 24 x 256 x 8 / 4 = 12288 DSPs of 9024
  EXPECT_FALSE(EstimateAccelerator({}, big, Llama7b(1, 128)).fits);
}

}  // namespace
}  // namespace accllm::fpga
