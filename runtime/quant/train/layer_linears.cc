#include "runtime/quant/train/layer_linears.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace accllm {

absl::StatusOr<std::vector<std::size_t>> LayerLinearSlots(const PackedContents& packed, int layer) {
  std::vector<std::size_t> found;
  for (TensorKind kind : kLayerLinearKinds) {
    auto it = std::find_if(packed.linears.begin(), packed.linears.end(),
                           [&](const auto& entry) { return entry.first.layer == layer && entry.first.kind == kind; });
    if (it == packed.linears.end()) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " lacks a quantized linear"));
    found.push_back(static_cast<std::size_t>(it - packed.linears.begin()));
  }
  return found;
}

LayerWeights WithLinears(const LayerWeights& norms, std::span<std::vector<float>> dense) {
  LayerWeights w = norms;
  w.wq = dense[0].data();
  w.wk = dense[1].data();
  w.wv = dense[2].data();
  w.wo = dense[3].data();
  w.w1 = dense[4].data();
  w.w2 = dense[5].data();
  w.w3 = dense[6].data();
  return w;
}

}  // namespace accllm
