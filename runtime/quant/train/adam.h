// Adam (Kingma & Ba) for the training-time code: one state per parameter vector.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace accllm {

struct AdamOptions {
  // Block-AP's steps on gutenberg30M with the cosine schedule (docs/QUALITY.md): 2e-4 and 1e-4
  // gave 25.51 where 1e-4 and 5e-5 kept constant gave 25.86.
  float weight_lr = 2e-4f;
  float scale_lr = 1e-4f;
  float norm_lr = 0.0f;  // norm gains; 0: kept as they are
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

// How the steps change over a training run: kept constant, or decayed from the full step to zero
// along half a cosine (EfficientQAT's schedule).
enum class LrSchedule { kConstant, kCosine };

// The factor on the step size at `step` of `total_steps` (0-based).
float LrFactor(LrSchedule schedule, std::size_t step, std::size_t total_steps);

class AdamState {
 public:
  explicit AdamState(std::size_t size) : m_(size), v_(size) {}

  // One step of size `lr` on x from `grad`, which it then clears.
  void Step(std::span<float> x, std::span<float> grad, float lr, const AdamOptions& options);

 private:
  std::vector<float> m_, v_;
  int steps_ = 0;
};

}  // namespace accllm
