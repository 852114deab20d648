// An AttentionBatch (runtime/kv/attention_batch.h) run on the CPU: per (token, head) query,
// scores over its page runs with the KV4 (or fp32) kernels, softmax, and the weighted sum of
// values, items spread over the thread pool.
#pragma once

#include "runtime/cpu/kernels.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/kv/attention_batch.h"
#include "runtime/kv/kv_storage.h"

namespace accllm {

// out[item][head_size] for every item of `batch`, reading the cache in `kv`.
void RunAttentionOnCpu(const AttentionBatch& batch, const KvStorage& kv, const CpuKernels& kernels, ThreadPool& pool,
                       float* out);

}  // namespace accllm
