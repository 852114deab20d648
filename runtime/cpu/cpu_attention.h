// An AttentionBatch (runtime/kv/attention_batch.h) run on the CPU: per (token, head) query,
// scores over its page runs with the KV4 (or fp32) kernels, softmax, and the weighted sum of
// values, items spread over the thread pool.
//
// Items that read the same keys (the query heads of one KV head; the tokens of one sequence in a
// prefill step, each token's runs a prefix of the next one's) can run as a block: the block's
// keys and values are made floats (their codes) once, every query is scored against them as a
// matrix product, and every value vector is read once for all the queries. Each score and each
// output element is the same sum in the same order as one item's alone, so the results are the
// same bits either way.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/kv/attention_batch.h"
#include "runtime/kv/kv_storage.h"

namespace accllm {

// Which items of a batch run as blocks. It depends only on which vectors the items' runs name
// relative to each other, which is the same in every layer of a step: a plan made from one
// layer's batch holds for every layer of that step.
struct SharedKeyPlan {
  int32_t items = 0;                    // the batch's
  std::vector<int32_t> block_begin{0};  // [blocks + 1] into block_items
  std::vector<int32_t> block_items;     // each block's items, the one with the most keys last
  std::vector<int32_t> single_items;    // items that run one at a time
};

// Groups the items without sink runs by their first key vector, orders each group by key count,
// and cuts it into blocks of up to `max_block` items; an item whose runs are not a prefix of its
// block's last item's runs runs alone, as do items with sink runs (they meet two queries).
SharedKeyPlan PlanSharedKeys(const AttentionBatch& batch, int max_block);

// out[item][head_size] for every item of `batch`, reading the cache in `kv`; with a plan (KV4
// caches only), its blocks as blocks.
void RunAttentionOnCpu(const AttentionBatch& batch, const KvStorage& kv, const CpuKernels& kernels, ThreadPool& pool,
                       float* out, const SharedKeyPlan* plan = nullptr);

// The items [first, first + count) of `batch` on the calling thread, into out[item][head_size]: as
// one block when they read the same keys without sinks (the query heads of one KV head in a decode
// step; KV4 caches, at most `max_block` items), one by one otherwise. The same bits either way.
void RunAttentionItems(const AttentionBatch& batch, const KvStorage& kv, const CpuKernels& kernels, int32_t first,
                       int32_t count, int max_block, float* out);

}  // namespace accllm
