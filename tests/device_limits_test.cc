// The accelerator's limits: the KV banks of a U280 against the shipped server configuration, the
// W2A8 unit's widths, and the attention unit's span.
#include "fpga/device_limits.h"

#include <fstream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "fpga/model/perf_model.h"
#include "gmock/gmock.h"
#include "runtime/kv/sequence_kv.h"
#include "tests/test_support.h"

namespace accllm::fpga {
namespace {

using ::testing::HasSubstr;

// The shipped deploy/k8s/base/server.toml as key -> value (its values are plain numbers and strings).
std::map<std::string, std::string> ShippedConfig() {
  std::ifstream in(std::string(ACCLLM_SOURCE_DIR) + "/deploy/k8s/base/server.toml");
  EXPECT_TRUE(in) << "deploy/k8s/base/server.toml is missing";
  std::map<std::string, std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    if (kv.size() != 2) continue;
    std::string value(absl::StripAsciiWhitespace(kv[1]));
    if (value.size() >= 2 && value.front() == '"') value = value.substr(1, value.size() - 2);
    out[std::string(absl::StripAsciiWhitespace(kv[0]))] = value;
  }
  return out;
}

int Number(const std::map<std::string, std::string>& config, const std::string& key, int otherwise) {
  auto it = config.find(key);
  int v = otherwise;
  if (it != config.end()) {
    EXPECT_TRUE(absl::SimpleAtoi(it->second, &v)) << key;
  }
  return v;
}

// The shipped configuration on a U280 with Llama-2-7B: the KV pool the server sizes for it
// (max-running full-length streams) is more than the key bank holds, so the card's device takes
// what fits, which still holds whole streams; asked for explicitly, the same pool is refused
// with the bank and the numbers; and `accllm fpga-model` says the same.
TEST(DeviceLimitsTest, ShippedConfigFitsAU280ForLlama2_7b) {
  const auto config = ShippedConfig();
  ASSERT_OK_AND_ASSIGN(const LlamaConfig llama, ParseShape("llama2-7b"));
  BackendOptions options;
  options.window = Number(config, "window", 0);
  options.sinks = Number(config, "sinks", options.sinks);
  options.page_tokens = Number(config, "page-tokens", options.page_tokens);
  const int max_running = Number(config, "max-running", 16);
  const int prefill_chunk = Number(config, "prefill-chunk", 64);
  ASSERT_EQ(config.count("kv-pages"), 0u) << "the shipped config sizes its pool from the card";
  const int per_stream = SequenceKv::MaxPages(LambdaFor(options), options.page_tokens, prefill_chunk, llama.max_seq_len);
  options.kv_pages = max_running * per_stream;  // what Server::Load asks of every device

  options.kv_pages_fit_device = true;
  ASSERT_OK_AND_ASSIGN(const int pages, KvPagesForCard(options, llama));
  ASSERT_OK(CheckKvPagesFit(llama, options.page_tokens, pages));
  EXPECT_LE(PlaceKv(llama, options.page_tokens, pages).channel_bytes, kHbmPseudoChannelBytes);
  EXPECT_GT(PlaceKv(llama, options.page_tokens, pages + 1).channel_bytes, kHbmPseudoChannelBytes);  // all of it
  const int streams = pages / per_stream;
  EXPECT_GE(streams, 4) << "a U280 should hold several full-window Llama-2-7B streams";
  EXPECT_LT(pages, options.kv_pages) << "the shipped config no longer overflows the banks; retune this test";

  options.kv_pages_fit_device = false;  // the same number given as --kv-pages
  absl::StatusOr<int> refused = KvPagesForCard(options, llama);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("in each KV channel (HBM[28], HBM[29], HBM[30], HBM[31]), which holds 256 MiB"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr(absl::StrCat("at most ", pages, " pages fit")));

  Workload work;
  work.config = llama;
  work.window = options.window;
  work.sinks = options.sinks;
  work.context = llama.max_seq_len;
  work.page_tokens = options.page_tokens;
  work.prefill_chunk = prefill_chunk;
  work.batch = streams;
  const Estimate fits = EstimateAccelerator(U280Platform{}, AcceleratorDesign{}, work);
  EXPECT_EQ(fits.kv_streams, streams);
  EXPECT_TRUE(fits.fits);
  work.batch = streams + 1;
  EXPECT_FALSE(EstimateAccelerator(U280Platform{}, AcceleratorDesign{}, work).fits);
}

TEST(DeviceLimitsTest, ModelsWiderThanTheUnitsAreRefused) {
  ASSERT_OK_AND_ASSIGN(LlamaConfig llama, ParseShape("llama2-7b"));
  W2Matrix fits(W2Shape{.rows = 16, .cols = 11008, .group_size = 128});
  W2Matrix too_wide(W2Shape{.rows = 16, .cols = 16384 + 128, .group_size = 128});
  W2Matrix too_many_groups(W2Shape{.rows = 16, .cols = 512 * 32 + 32, .group_size = 32, .sparse24 = true});
  // 2:4 stores half the columns, but a call stages every input's activation.
  W2Matrix sparse_too_wide(W2Shape{.rows = 16, .cols = 2 * 16384, .group_size = 128, .sparse24 = true});
  const std::vector<std::pair<TensorId, W2View>> ok = {{TensorId{TensorKind::kWq}, fits.view()}};
  ASSERT_OK(CheckModelFitsUnits(llama, ok));
  for (const W2Matrix* m : {&too_wide, &too_many_groups, &sparse_too_wide}) {
    const std::vector<std::pair<TensorId, W2View>> bad = {{TensorId{TensorKind::kWq}, m->view()}};
    absl::Status s = CheckModelFitsUnits(llama, bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("wider than the W2A8 unit holds on chip"));
  }
  llama.dim = 64 * 300;  // head size 300 > 256
  llama.n_heads = 64;
  EXPECT_THAT(std::string(CheckModelFitsUnits(llama, ok).message()), HasSubstr("does not fit the attention unit"));
}

}  // namespace
}  // namespace accllm::fpga
