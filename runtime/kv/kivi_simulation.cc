#include "runtime/kv/kivi_simulation.h"

#include <vector>

#include "runtime/common/half.h"

namespace accllm {

void RoundTripKv4(std::span<float> x) {
  std::vector<uint8_t> codes((x.size() + 1) / 2);
  const Kv4Params params = QuantizeKv4(x, codes.data());
  const float scale = Fp16ToFloat(params.scale), min = Fp16ToFloat(params.min);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = min + scale * Kv4Code(codes.data(), static_cast<int>(i));
}

void RoundTripKiviGroup(KvStorage& kv, std::span<const int64_t> vectors, int head_size, bool values_too) {
  auto* keys = reinterpret_cast<float*>(kv.mutable_region(KvRegion::kKeyCodes));
  auto* values = reinterpret_cast<float*>(kv.mutable_region(KvRegion::kValueCodes));
  std::vector<float> channel(vectors.size());
  for (int d = 0; d < head_size; ++d) {
    for (std::size_t i = 0; i < vectors.size(); ++i) channel[i] = keys[vectors[i] * head_size + d];
    RoundTripKv4(channel);
    for (std::size_t i = 0; i < vectors.size(); ++i) keys[vectors[i] * head_size + d] = channel[i];
  }
  if (!values_too) return;
  for (const int64_t v : vectors) RoundTripKv4({values + v * head_size, static_cast<std::size_t>(head_size)});
}

}  // namespace accllm
