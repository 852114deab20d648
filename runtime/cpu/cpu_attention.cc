#include "runtime/cpu/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <unordered_map>

#include "runtime/common/half.h"
#include "runtime/common/lane_sum.h"

namespace accllm {
namespace {

struct CacheView {
  explicit CacheView(const KvStorage& kv)
      : kv4(kv.precision() == KvPrecision::kKv4),
        key_codes(reinterpret_cast<const uint8_t*>(kv.region(KvRegion::kKeyCodes))),
        value_codes(reinterpret_cast<const uint8_t*>(kv.region(KvRegion::kValueCodes))),
        key_params(reinterpret_cast<const Kv4Params*>(kv.region(KvRegion::kKeyParams))),
        value_params(reinterpret_cast<const Kv4Params*>(kv.region(KvRegion::kValueParams))) {}
  bool kv4;
  const uint8_t* key_codes;
  const uint8_t* value_codes;
  const Kv4Params* key_params;
  const Kv4Params* value_params;
};

int KeyCount(const AttentionBatch& b, int32_t item) {
  int count = 0;
  for (int r = b.item_runs[item]; r < b.item_runs[item + 1]; ++r) count += b.run_count[r];
  return count;
}

// Whether item a's runs are the first of item l's: the same runs, the last one perhaps shorter.
bool RunsArePrefix(const AttentionBatch& b, int32_t a, int32_t l) {
  const int first_a = b.item_runs[a], runs_a = b.item_runs[a + 1] - first_a;
  const int first_l = b.item_runs[l], runs_l = b.item_runs[l + 1] - first_l;
  if (runs_a > runs_l) return false;
  for (int k = 0; k < runs_a; ++k) {
    const int ra = first_a + k, rl = first_l + k;
    if (b.run_start[ra] != b.run_start[rl]) return false;
    if (k + 1 < runs_a ? b.run_count[ra] != b.run_count[rl] : b.run_count[ra] > b.run_count[rl]) return false;
  }
  return true;
}

// One item alone, reading the codes with the KV4 kernels (or an fp32 cache).
void RunItem(const AttentionBatch& b, const CacheView& c, const CpuKernels& kernels, int64_t item,
             std::vector<float>& scores, float* out_all) {
  const int hs = b.head_size;
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hs));
  const int first_run = b.item_runs[item], last_run = b.item_runs[item + 1];
  const int count = KeyCount(b, static_cast<int32_t>(item));
  if (static_cast<int>(scores.size()) < count) scores.resize(count);
  const float* q = &b.q[item * hs];
  const float* q_sink = &b.q_sink[item * hs];
  // In lane_sum.h's order, which the accelerator's attention unit takes a beat at a time.
  const float q_sum = LaneSum(q, hs);
  const float q_sink_sum = b.item_sink_runs[item] > 0 ? LaneSum(q_sink, hs) : 0.0f;
  for (int r = first_run, index = 0; r < last_run; index += b.run_count[r++]) {
    const bool sink = r - first_run < b.item_sink_runs[item];
    const float* query = sink ? q_sink : q;
    const int64_t v = b.run_start[r];
    if (c.kv4) {
      kernels.kv4_score(query, sink ? q_sink_sum : q_sum, c.key_codes + v * (hs / 2), c.key_params + v, b.run_count[r],
                        hs, inv_sqrt, &scores[index]);
    } else {
      kernels.f32_score(query, reinterpret_cast<const float*>(c.key_codes) + v * hs, b.run_count[r], hs, inv_sqrt,
                        &scores[index]);
    }
  }
  kernels.softmax(scores.data(), count);

  float* out = out_all + item * hs;
  std::memset(out, 0, hs * sizeof(float));
  float min_sum = 0.0f;  // KV4: sum of p * min, added to every element at the end
  for (int r = first_run, index = 0; r < last_run; index += b.run_count[r++]) {
    const int64_t v = b.run_start[r];
    if (c.kv4) {
      min_sum += kernels.kv4_accumulate(out, &scores[index], c.value_codes + v * (hs / 2), c.value_params + v,
                                        b.run_count[r], hs);
    } else {
      kernels.f32_accumulate(out, hs, &scores[index], 0, 1,
                             reinterpret_cast<const float*>(c.value_codes) + v * hs, b.run_count[r], hs);
    }
  }
  if (min_sum != 0.0f) {
    for (int d = 0; d < hs; ++d) out[d] += min_sum;
  }
}

// A thread's scratch for blocks, kept between calls: a block's keys and values as floats can be
// megabytes (2 x window x head_size floats at most), which a fresh allocation per block would map
// and fault in each time.
struct BlockScratch {
  std::vector<float> keys, values, key_scale, key_min, value_scale, value_min;
  std::vector<float> queries, q_sum, dots, probs, out, min_sum;
  std::vector<int> count, rows;
};

constexpr int kQueryTile = 4;

// A KV4 vector's codes (0..15) as floats, Kv4Code's values a byte at a time (a form the compiler
// vectorizes): exact, so the float kernels' sums over them are the KV4 kernels' sums.
void CodesAsFloats(const uint8_t* codes, int head_size, float* out) {
  for (int i = 0; i < head_size / 2; ++i) {
    out[2 * i] = static_cast<float>(codes[i] & 15);
    out[2 * i + 1] = static_cast<float>(codes[i] >> 4);
  }
}

// The items of one block, whose runs are all prefixes of the last one's: the KV4 kernels'
// operations in their order (kernels.h), with the codes made floats once for the whole block.
// Keys past an item's own count (up to the most of its four) get probability 0, which adds +0 to
// sums that are never -0.
void RunBlock(const AttentionBatch& b, const CacheView& c, const CpuKernels& kernels, std::span<const int32_t> items,
              BlockScratch& s, float* out_all) {
  const int hs = b.head_size;
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hs));
  const int nq = static_cast<int>(items.size());
  const int32_t last = items.back();
  const int nk = KeyCount(b, last);
  s.keys.resize(static_cast<std::size_t>(nk) * hs);
  s.values.resize(s.keys.size());
  for (auto* v : {&s.key_scale, &s.key_min, &s.value_scale, &s.value_min}) v->resize(nk);
  for (int r = b.item_runs[last], i = 0; r < b.item_runs[last + 1]; ++r) {
    for (int64_t v = b.run_start[r]; v < b.run_start[r] + b.run_count[r]; ++v, ++i) {
      CodesAsFloats(c.key_codes + v * (hs / 2), hs, &s.keys[static_cast<std::size_t>(i) * hs]);
      CodesAsFloats(c.value_codes + v * (hs / 2), hs, &s.values[static_cast<std::size_t>(i) * hs]);
      s.key_scale[i] = Fp16ToFloat(c.key_params[v].scale);
      s.key_min[i] = Fp16ToFloat(c.key_params[v].min);
      s.value_scale[i] = Fp16ToFloat(c.value_params[v].scale);
      s.value_min[i] = Fp16ToFloat(c.value_params[v].min);
    }
  }
  s.queries.resize(static_cast<std::size_t>(nq) * hs);
  s.q_sum.resize(nq);
  for (int j = 0; j < nq; ++j) {
    std::memcpy(&s.queries[static_cast<std::size_t>(j) * hs], &b.q[static_cast<std::size_t>(items[j]) * hs],
                hs * sizeof(float));
    s.q_sum[j] = LaneSum(&s.queries[static_cast<std::size_t>(j) * hs], hs);
  }
  // Four queries at a time (the float kernels' token block), each four over the keys the one of
  // them with the most keys reads: a prefill's causal triangle is not computed twice over.
  s.count.resize(nq);
  s.rows.resize((nq + kQueryTile - 1) / kQueryTile);
  for (int j = 0; j < nq; ++j) s.count[j] = KeyCount(b, items[j]);
  for (int j = 0; j < nq; j += kQueryTile) {
    const int tile = std::min(kQueryTile, nq - j);
    s.rows[j / kQueryTile] = *std::max_element(s.count.begin() + j, s.count.begin() + j + tile);
  }
  s.dots.resize(static_cast<std::size_t>(nq) * nk);
  for (int j = 0; j < nq; j += kQueryTile) {
    kernels.matmul_f32(s.keys.data(), hs, &s.queries[static_cast<std::size_t>(j) * hs], std::min(kQueryTile, nq - j), hs,
                       0, s.rows[j / kQueryTile], &s.dots[static_cast<std::size_t>(j) * nk], nk);
  }

  s.probs.assign(static_cast<std::size_t>(nq) * nk, 0.0f);
  s.min_sum.resize(nq);
  for (int j = 0; j < nq; ++j) {
    const int32_t item = items[j];
    const int count = s.count[j];
    float* p = &s.probs[static_cast<std::size_t>(j) * nk];
    const float* dot = &s.dots[static_cast<std::size_t>(j) * nk];
    for (int i = 0; i < count; ++i) p[i] = inv_sqrt * (s.key_scale[i] * dot[i] + s.key_min[i] * s.q_sum[j]);
    kernels.softmax(p, count);
    float min_sum = 0.0f;  // run by run, as kv4_accumulate returns it
    for (int r = b.item_runs[item], i = 0; r < b.item_runs[item + 1]; ++r) {
      float run_sum = 0.0f;
      for (int e = i + b.run_count[r]; i < e; ++i) run_sum += p[i] * s.value_min[i];
      min_sum += run_sum;
    }
    s.min_sum[j] = min_sum;
    for (int i = 0; i < count; ++i) p[i] *= s.value_scale[i];
  }
  s.out.assign(static_cast<std::size_t>(nq) * hs, 0.0f);
  for (int j = 0; j < nq; j += kQueryTile) {
    kernels.f32_accumulate(&s.out[static_cast<std::size_t>(j) * hs], hs, &s.probs[static_cast<std::size_t>(j) * nk], nk,
                           std::min(kQueryTile, nq - j), s.values.data(), s.rows[j / kQueryTile], hs);
  }
  for (int j = 0; j < nq; ++j) {
    float* out = out_all + static_cast<int64_t>(items[j]) * hs;
    const float* sum = &s.out[static_cast<std::size_t>(j) * hs];
    if (s.min_sum[j] != 0.0f) {
      for (int d = 0; d < hs; ++d) out[d] = sum[d] + s.min_sum[j];
    } else {
      std::memcpy(out, sum, hs * sizeof(float));
    }
  }
}

}  // namespace

SharedKeyPlan PlanSharedKeys(const AttentionBatch& b, int max_block) {
  SharedKeyPlan plan;
  plan.items = b.items;
  std::unordered_map<int32_t, std::size_t> group_of;  // first key vector -> group
  std::vector<std::vector<int32_t>> groups;
  std::vector<int> count(b.items);
  for (int32_t item = 0; item < b.items; ++item) {
    count[item] = KeyCount(b, item);
    if (b.item_sink_runs[item] > 0 || count[item] == 0) {
      plan.single_items.push_back(item);
      continue;
    }
    const auto [it, inserted] = group_of.try_emplace(b.run_start[b.item_runs[item]], groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(item);
  }
  struct Block {
    std::vector<int32_t> items;
    int64_t work;
  };
  std::vector<Block> blocks;
  for (std::vector<int32_t>& group : groups) {
    std::stable_sort(group.begin(), group.end(), [&](int32_t x, int32_t y) { return count[x] < count[y]; });
    for (std::size_t start = 0; start < group.size(); start += max_block) {
      const std::size_t end = std::min(group.size(), start + static_cast<std::size_t>(max_block));
      const int32_t last = group[end - 1];
      Block block;
      for (std::size_t i = start; i + 1 < end; ++i) {
        if (RunsArePrefix(b, group[i], last)) {
          block.items.push_back(group[i]);
        } else {
          plan.single_items.push_back(group[i]);
        }
      }
      block.items.push_back(last);
      if (block.items.size() == 1) {
        plan.single_items.push_back(last);
        continue;
      }
      block.work = static_cast<int64_t>(block.items.size()) * count[last];
      blocks.push_back(std::move(block));
    }
  }
  // The largest first, so that the pool's last chunks are small ones.
  std::stable_sort(blocks.begin(), blocks.end(), [](const Block& x, const Block& y) { return x.work > y.work; });
  for (const Block& block : blocks) {
    plan.block_items.insert(plan.block_items.end(), block.items.begin(), block.items.end());
    plan.block_begin.push_back(static_cast<int32_t>(plan.block_items.size()));
  }
  std::sort(plan.single_items.begin(), plan.single_items.end());
  return plan;
}

void RunAttentionOnCpu(const AttentionBatch& b, const KvStorage& kv, const CpuKernels& kernels, ThreadPool& pool,
                       float* out_all, const SharedKeyPlan* plan) {
  const CacheView cache(kv);
  if (plan == nullptr || !cache.kv4 || plan->items != b.items) {
    pool.ParallelFor(b.items, [&](int64_t begin, int64_t end) {
      std::vector<float> scores;
      for (int64_t item = begin; item < end; ++item) RunItem(b, cache, kernels, item, scores, out_all);
    });
    return;
  }
  const int64_t blocks = static_cast<int64_t>(plan->block_begin.size()) - 1;
  const int64_t units = blocks + static_cast<int64_t>(plan->single_items.size());
  pool.ParallelFor(units, [&](int64_t begin, int64_t end) {
    thread_local BlockScratch scratch;
    std::vector<float> scores;
    for (int64_t u = begin; u < end; ++u) {
      if (u < blocks) {
        const auto first = plan->block_items.begin() + plan->block_begin[u];
        RunBlock(b, cache, kernels, std::span<const int32_t>(first, first + (plan->block_begin[u + 1] - plan->block_begin[u])),
                 scratch, out_all);
      } else {
        RunItem(b, cache, kernels, plan->single_items[u - blocks], scores, out_all);
      }
    }
  });
}

void RunAttentionItems(const AttentionBatch& b, const KvStorage& kv, const CpuKernels& kernels, int32_t first,
                       int32_t count, int max_block, float* out_all) {
  const CacheView cache(kv);
  const int32_t last = first + count - 1;
  bool block = cache.kv4 && count > 1 && count <= max_block;
  for (int32_t item = first; block && item <= last; ++item) {
    block = b.item_sink_runs[item] == 0 && KeyCount(b, item) > 0 && RunsArePrefix(b, item, last);
  }
  if (block) {
    thread_local BlockScratch scratch;
    thread_local std::vector<int32_t> items;
    items.resize(count);
    for (int32_t j = 0; j < count; ++j) items[j] = first + j;
    RunBlock(b, cache, kernels, items, scratch, out_all);
    return;
  }
  thread_local std::vector<float> scores;
  for (int32_t item = first; item <= last; ++item) RunItem(b, cache, kernels, item, scores, out_all);
}

}  // namespace accllm
