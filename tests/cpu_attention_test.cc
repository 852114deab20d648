// The CPU attention's blocks of shared keys against its items one at a time: the same bits on
// every kernel path, whatever the plan makes blocks of.
#include "runtime/cpu/cpu_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/model/llama_config.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

constexpr int kPageTokens = 16;

using ::accllm::testing::AvailableKernels;
using ::accllm::testing::ExpectSameBits;

// A one-layer cache full of random vectors, and a batch over it built item by item.
class AttentionFixture {
 public:
  AttentionFixture(int head_size, int n_heads, int n_kv_heads) : rng_(11) {
    config_.dim = head_size * n_heads;
    config_.hidden_dim = 8;
    config_.n_layers = 1;
    config_.n_heads = n_heads;
    config_.n_kv_heads = n_kv_heads;
    config_.vocab_size = 8;
    config_.max_seq_len = 1024;
    kv_ = std::make_unique<KvStorage>(config_, kPages, kPageTokens, KvPrecision::kKv4);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> k(head_size), v(head_size);
    for (int page = 0; page < kPages; ++page) {
      for (int slot = 0; slot < kPageTokens; ++slot) {
        for (int h = 0; h < n_kv_heads; ++h) {
          for (int d = 0; d < head_size; ++d) {
            k[d] = normal(rng_) + (d % 7 == 0 ? 3.0f : 0.0f);  // outlier channels, as real keys have
            v[d] = normal(rng_);
          }
          kv_->WriteHead(0, page, slot, h, k.data(), v.data());
        }
      }
    }
    batch_.head_size = head_size;
    batch_.item_runs = {0};
  }

  struct PageRun {
    int page, slot, count;
  };
  // One item: KV head `kv_head`, its sink runs first.
  void AddItem(int kv_head, const std::vector<PageRun>& runs, int sink_runs = 0) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const PageRun& r : runs) {
      batch_.run_start.push_back(static_cast<int32_t>(kv_->VectorIndex(0, r.page, kv_head, r.slot)));
      batch_.run_count.push_back(r.count);
    }
    batch_.item_runs.push_back(static_cast<int32_t>(batch_.run_start.size()));
    batch_.item_sink_runs.push_back(sink_runs);
    for (int d = 0; d < batch_.head_size; ++d) {
      batch_.q.push_back(normal(rng_));
      batch_.q_sink.push_back(normal(rng_));
    }
    ++batch_.items;
  }

  // The runs of a token at `position` of a sequence on `pages`, seeing positions [from, position].
  static std::vector<PageRun> Window(const std::vector<int>& pages, int from, int position) {
    std::vector<PageRun> runs;
    for (int p = from; p <= position;) {
      const int slot = p % kPageTokens, count = std::min(kPageTokens - slot, position + 1 - p);
      runs.push_back({pages[p / kPageTokens], slot, count});
      p += count;
    }
    return runs;
  }

  std::vector<float> Attend(const CpuKernels& kernels, const SharedKeyPlan* plan) {
    ThreadPool pool(3);
    std::vector<float> out(static_cast<std::size_t>(batch_.items) * batch_.head_size, -1.0f);
    RunAttentionOnCpu(batch_, *kv_, kernels, pool, out.data(), plan);
    return out;
  }

  const AttentionBatch& batch() const { return batch_; }

 private:
  static constexpr int kPages = 12;
  std::mt19937 rng_;
  LlamaConfig config_;
  std::unique_ptr<KvStorage> kv_;
  AttentionBatch batch_;
};

// Every item exactly once, and each block's items prefixes of its last one.
void ExpectPlanCoversEveryItemOnce(const SharedKeyPlan& plan, int items) {
  std::vector<int32_t> all = plan.single_items;
  all.insert(all.end(), plan.block_items.begin(), plan.block_items.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(static_cast<int>(all.size()), items);
  for (int i = 0; i < items; ++i) EXPECT_EQ(all[i], i);
  for (std::size_t b = 0; b + 1 < plan.block_begin.size(); ++b) EXPECT_GE(plan.block_begin[b + 1] - plan.block_begin[b], 2);
}

TEST(CpuAttentionTest, BlocksOfSharedKeysGiveTheItemsBitsOnEveryPath) {
  for (int head_size : {8, 32, 48, 64, 128}) {  // 8 and 48: the KV4 kernels' scalar fallbacks
    SCOPED_TRACE("head size " + std::to_string(head_size));
    // 4 query heads on 2 KV heads: the heads of a KV head read the same keys.
    AttentionFixture f(head_size, /*n_heads=*/4, /*n_kv_heads=*/2);
    const std::vector<int> prefill_pages = {7, 2, 9}, decode_pages = {4, 0, 11, 5};
    // A prefill step of 37 tokens (positions 3..39), every token seeing the sequence so far.
    for (int position = 3; position < 40; ++position) {
      for (int h = 0; h < 4; ++h) f.AddItem(h / 2, AttentionFixture::Window(prefill_pages, 0, position));
    }
    // A decode token past its window: sinks (positions 0..3) then a window from 21 to 50.
    for (int h = 0; h < 4; ++h) {
      auto runs = AttentionFixture::Window(decode_pages, 0, 3);
      for (const auto& r : AttentionFixture::Window(decode_pages, 21, 50)) runs.push_back(r);
      f.AddItem(h / 2, runs, /*sink_runs=*/1);
    }
    // Sliding-window tokens whose first key is the same vector but whose runs are no prefix of
    // one another: page 1's first 16 slots, then different pages.
    f.AddItem(0, {{1, 0, 16}, {3, 0, 5}});
    f.AddItem(0, {{1, 0, 16}, {6, 0, 8}});
    f.AddItem(0, {{1, 0, 10}, {6, 0, 8}});
    f.AddItem(0, {{1, 0, 16}, {6, 0, 9}, {8, 0, 2}});

    for (int max_block : {64, 5, 2}) {
      const SharedKeyPlan plan = PlanSharedKeys(f.batch(), max_block);
      ExpectPlanCoversEveryItemOnce(plan, f.batch().items);
      EXPECT_GT(plan.block_items.size(), 140u);  // the prefill step's items, nearly all
      for (int32_t item : {f.batch().items - 8, f.batch().items - 5}) {  // sinks
        EXPECT_TRUE(std::binary_search(plan.single_items.begin(), plan.single_items.end(), item)) << item;
      }
    }

    const std::vector<float> want = f.Attend(kScalarKernels, nullptr);
    for (const CpuKernels* k : AvailableKernels()) {
      SCOPED_TRACE(k->name);
      ExpectSameBits(f.Attend(*k, nullptr), want);
      for (int max_block : {64, 5, 2}) {
        SCOPED_TRACE("blocks of up to " + std::to_string(max_block));
        const SharedKeyPlan plan = PlanSharedKeys(f.batch(), max_block);
        ExpectSameBits(f.Attend(*k, &plan), want);
      }
    }
  }
}

TEST(CpuAttentionTest, APlanForAnotherBatchIsNotUsed) {
  AttentionFixture f(64, 2, 2);
  for (int position = 0; position < 20; ++position) f.AddItem(0, AttentionFixture::Window({3, 4}, 0, position));
  const SharedKeyPlan plan = PlanSharedKeys(f.batch(), 8);
  SharedKeyPlan stale = plan;
  stale.items = plan.items + 1;
  ExpectSameBits(f.Attend(kScalarKernels, &stale), f.Attend(kScalarKernels, nullptr));
  ExpectSameBits(f.Attend(kScalarKernels, &plan), f.Attend(kScalarKernels, nullptr));
}

TEST(F32AttentionKernelTest, SeveralQueriesAtOnceAddAsOneAtATime) {
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int head_size : {6, 16, 48, 64, 128}) {
    for (int queries : {1, 3, 4, 7, 9}) {
      const int count = 13, ld_p = count + 2, ld_out = head_size + 3;
      std::vector<float> p(static_cast<std::size_t>(queries) * ld_p), values(static_cast<std::size_t>(count) * head_size);
      std::vector<float> out0(static_cast<std::size_t>(queries) * ld_out);
      for (auto* v : {&p, &values, &out0}) {
        for (float& e : *v) e = normal(rng);
      }
      // One query at a time on the scalar path.
      std::vector<float> want = out0;
      for (int j = 0; j < queries; ++j) {
        kScalarKernels.f32_accumulate(&want[j * ld_out], head_size, &p[j * ld_p], 0, 1, values.data(), count, head_size);
      }
      for (const CpuKernels* k : AvailableKernels()) {
        SCOPED_TRACE(std::string(k->name) + " head size " + std::to_string(head_size) + " queries " +
                     std::to_string(queries));
        std::vector<float> got = out0;
        k->f32_accumulate(got.data(), ld_out, p.data(), ld_p, queries, values.data(), count, head_size);
        ExpectSameBits(got, want);
      }
    }
  }
}

}  // namespace
}  // namespace accllm
