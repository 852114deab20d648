#include "runtime/quant/train/trainable_w2.h"

#include <algorithm>
#include <cmath>

#include "runtime/common/half.h"

namespace accllm {
namespace {

struct Quantized {
  uint8_t code;
  float level;  // W2Level(code, z)
  bool clamped;
};

Quantized QuantizeLatent(float w, float s, uint8_t z) {
  const float q = std::nearbyint((w / s + z) * 0.5f);
  const float c = std::clamp(q, 0.0f, 3.0f);
  const auto code = static_cast<uint8_t>(c);
  return {code, static_cast<float>(W2Level(code, z)), c != q};
}

}  // namespace

TrainableW2::TrainableW2(const W2Matrix& m, std::span<const float> positions)
    : base_(m),
      shape_(m.shape),
      groups_(m.shape.groups()),
      weights_(static_cast<std::size_t>(m.shape.rows) * m.shape.cols),
      scales_(static_cast<std::size_t>(m.shape.rows) * groups_),
      zeros_(scales_.size()),
      kept_(weights_.size(), m.shape.sparse24 ? 0 : 1),
      weight_grad_(weights_.size()),
      scale_grad_(scales_.size()),
      weight_adam_(weights_.size()),
      scale_adam_(scales_.size()) {
  const W2View view = m.view();
  for (int r = 0; r < shape_.rows; ++r) {
    for (int g = 0; g < groups_; ++g) {
      const int64_t pi = W2ParamIndex(r, g, groups_);
      scales_[static_cast<std::size_t>(r) * groups_ + g] = Fp16ToFloat(view.scales[pi]);
      zeros_[static_cast<std::size_t>(r) * groups_ + g] = view.zeros[pi];
    }
    float* latent = weights_.data() + static_cast<std::size_t>(r) * shape_.cols;
    DequantizeW2Row(view, r, std::span<float>(latent, shape_.cols));
    if (positions.size() == weights_.size()) {
      for (int c = 0; c < shape_.cols; ++c) {
        const std::size_t i = static_cast<std::size_t>(r) * shape_.cols + c;
        const std::size_t gi = static_cast<std::size_t>(r) * groups_ + c / shape_.group_size;
        // Only where it rounds to the stored code (it always does, up to float ties).
        const float moved = positions[i] * scales_[gi];
        if (QuantizeLatent(moved, scales_[gi], zeros_[gi]).code == QuantizeLatent(latent[c], scales_[gi], zeros_[gi]).code) latent[c] = moved;
      }
    }
    if (!shape_.sparse24) continue;
    for (int c = 0; c < shape_.stored_cols(); ++c) {
      const int original = W2OriginalColumn(view, r, c);
      if (original < shape_.cols) kept_[static_cast<std::size_t>(r) * shape_.cols + original] = 1;
    }
  }
}

void TrainableW2::Dequantize(std::span<float> out) const {
  for (int r = 0; r < shape_.rows; ++r) {
    for (int c = 0; c < shape_.cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * shape_.cols + c;
      if (!kept_[i]) {
        out[i] = 0.0f;
        continue;
      }
      const float s = Scale(r, c);
      out[i] = s * QuantizeLatent(weights_[i], s, zeros_[static_cast<std::size_t>(r) * groups_ + c / shape_.group_size]).level;
    }
  }
}

void TrainableW2::AccumulateGradient(std::span<const float> d_weights) {
  for (int r = 0; r < shape_.rows; ++r) {
    for (int c = 0; c < shape_.cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r) * shape_.cols + c;
      if (!kept_[i]) continue;
      const std::size_t gi = static_cast<std::size_t>(r) * groups_ + c / shape_.group_size;
      const float s = scales_[gi];
      const Quantized q = QuantizeLatent(weights_[i], s, zeros_[gi]);
      if (!q.clamped) weight_grad_[i] += d_weights[i];
      scale_grad_[gi] += d_weights[i] * q.level;
    }
  }
}

void TrainableW2::Step(const AdamOptions& options, float lr_factor) {
  weight_adam_.Step(weights_, weight_grad_, options.weight_lr * lr_factor, options);
  scale_adam_.Step(scales_, scale_grad_, options.scale_lr * lr_factor, options);
  for (float& s : scales_) s = std::max(s, 1e-7f);  // a scale stays positive
}

W2Matrix TrainableW2::Export() const {
  W2Matrix m = base_;
  const W2View view = base_.view();
  for (int r = 0; r < shape_.rows; ++r) {
    for (int g = 0; g < groups_; ++g) {
      const std::size_t gi = static_cast<std::size_t>(r) * groups_ + g;
      SetW2Params(m, r, g, {Fp16ToFloat(FloatToFp16(scales_[gi])), zeros_[gi]});
    }
    for (int c = 0; c < shape_.stored_cols(); ++c) {
      const int original = W2OriginalColumn(view, r, c);
      if (original >= shape_.cols) continue;
      const std::size_t gi = static_cast<std::size_t>(r) * groups_ + original / shape_.group_size;
      const float s = Fp16ToFloat(FloatToFp16(scales_[gi]));
      const uint8_t code = QuantizeLatent(weights_[static_cast<std::size_t>(r) * shape_.cols + original], s, zeros_[gi]).code;
      SetW2Code(m, r, c, code, static_cast<uint8_t>(original % 4));
    }
  }
  return m;
}

}  // namespace accllm
