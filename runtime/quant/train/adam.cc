#include "runtime/quant/train/adam.h"

#include <cmath>

namespace accllm {

float LrFactor(LrSchedule schedule, std::size_t step, std::size_t total_steps) {
  if (schedule == LrSchedule::kConstant || total_steps == 0) return 1.0f;
  return static_cast<float>(0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total_steps))));
}

void AdamState::Step(std::span<float> x, std::span<float> grad, float lr, const AdamOptions& o) {
  ++steps_;
  const float c1 = 1.0f - std::pow(o.beta1, static_cast<float>(steps_));
  const float c2 = 1.0f - std::pow(o.beta2, static_cast<float>(steps_));
  for (std::size_t i = 0; i < x.size(); ++i) {
    m_[i] = o.beta1 * m_[i] + (1.0f - o.beta1) * grad[i];
    v_[i] = o.beta2 * v_[i] + (1.0f - o.beta2) * grad[i] * grad[i];
    x[i] -= lr * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + o.eps);
    grad[i] = 0.0f;
  }
}

}  // namespace accllm
