#include "runtime/cpu/cpu_attention.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/common/lane_sum.h"
#include "runtime/common/nn_ops.h"

namespace accllm {

void RunAttentionOnCpu(const AttentionBatch& b, const KvStorage& kv, const CpuKernels& kernels, ThreadPool& pool,
                       float* out_all) {
  const int hs = b.head_size;
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hs));
  const bool kv4 = kv.precision() == KvPrecision::kKv4;
  const auto* key_codes = reinterpret_cast<const uint8_t*>(kv.region(KvRegion::kKeyCodes));
  const auto* value_codes = reinterpret_cast<const uint8_t*>(kv.region(KvRegion::kValueCodes));
  const auto* key_params = reinterpret_cast<const Kv4Params*>(kv.region(KvRegion::kKeyParams));
  const auto* value_params = reinterpret_cast<const Kv4Params*>(kv.region(KvRegion::kValueParams));
  pool.ParallelFor(b.items, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int first_run = b.item_runs[item], last_run = b.item_runs[item + 1];
      int count = 0;
      for (int r = first_run; r < last_run; ++r) count += b.run_count[r];
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
        if (kv4) {
          kernels.kv4_score(query, sink ? q_sink_sum : q_sum, key_codes + v * (hs / 2), key_params + v,
                              b.run_count[r], hs, inv_sqrt, &scores[index]);
        } else {
          kernels.f32_score(query, reinterpret_cast<const float*>(key_codes) + v * hs, b.run_count[r], hs, inv_sqrt,
                            &scores[index]);
        }
      }
      kernels.softmax(scores.data(), count);

      float* out = out_all + item * hs;
      std::memset(out, 0, hs * sizeof(float));
      float min_sum = 0.0f;  // KV4: sum of p * min, added to every element at the end
      for (int r = first_run, index = 0; r < last_run; index += b.run_count[r++]) {
        const int64_t v = b.run_start[r];
        if (kv4) {
          min_sum += kernels.kv4_accumulate(out, &scores[index], value_codes + v * (hs / 2), value_params + v,
                                              b.run_count[r], hs);
        } else {
          kernels.f32_accumulate(out, &scores[index], reinterpret_cast<const float*>(value_codes) + v * hs,
                                 b.run_count[r], hs);
        }
      }
      if (min_sum != 0.0f) {
        for (int d = 0; d < hs; ++d) out[d] += min_sum;
      }
    }
  });
}

}  // namespace accllm
