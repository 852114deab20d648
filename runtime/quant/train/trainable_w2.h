// A W2 matrix being refined by gradient descent (EfficientQAT's Block-AP): latent fp32 weights
// and per-group scales are trained, zero points and the 2:4 mask stay as quantization chose them.
// The forward value of each weight is its quantized value,
//
//   w_q = s * (2 clamp(round((w / s + z) / 2), 0, 3) - z),
//
// and gradients pass the rounding straight through to w where the code is not clamped (to s with
// the codes held fixed: d w_q / d s = 2q - z, the code's level). Latent weights start where GPTQ rounded them
// (`positions`, in units of the group's scale), or else at the dequantized values; either way
// training starts from exactly the codes it was given.
#pragma once

#include <span>
#include <vector>

#include "runtime/quant/train/adam.h"
#include "runtime/quant/w2.h"

namespace accllm {

class TrainableW2 {
 public:
  explicit TrainableW2(const W2Matrix& m, std::span<const float> positions = {});

  int rows() const { return shape_.rows; }
  int cols() const { return shape_.cols; }

  // The dense (rows x cols) weights the current latent values quantize to.
  void Dequantize(std::span<float> out) const;
  // Adds to the latent gradients, from the gradient of the dense quantized weights.
  void AccumulateGradient(std::span<const float> d_weights);
  // One Adam step on the accumulated gradients, which it then clears; `lr_factor` scales both
  // steps (a learning-rate schedule).
  void Step(const AdamOptions& options, float lr_factor = 1.0f);
  // The matrix with codes and scales (rounded to fp16) from the latent values.
  W2Matrix Export() const;

 private:
  float Scale(int row, int col) const { return scales_[static_cast<std::size_t>(row) * groups_ + col / shape_.group_size]; }

  W2Matrix base_;
  W2Shape shape_;
  int groups_ = 0;
  std::vector<float> weights_, scales_;  // latent; scales rows x groups
  std::vector<uint8_t> zeros_, kept_;    // zeros rows x groups; kept rows x cols (all 1 when dense)
  std::vector<float> weight_grad_, scale_grad_;
  AdamState weight_adam_, scale_adam_;
};

}  // namespace accllm
