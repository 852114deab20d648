// Where a CPU engine's steps spend their time, stage by stage (accllm bench --profile). Off unless
// an engine is given a StepProfile; then each stage boundary costs one clock read.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

#include "runtime/cpu/thread_pool.h"

namespace accllm {

enum class StepStage {
  kEmbedding,      // token rows, RoPE angles, page runs
  kNorms,          // RMSNorm before attention, FFN and the classifier
  kA8Quantize,     // activations to A8, once per linear-layer input
  kLinear,         // the layers' matrix products (W2A8, or fp16/fp32 when not quantized)
  kRopeKvWrite,    // RoPE on q and k, KV rotation and cache write (steps with several tokens of a sequence)
  kAttention,      // Λ attention, rotating back; in steps with one token per sequence, RoPE and the
                   // cache write too (one loop)
  kElementwise,    // residual adds, SwiGLU, the FFN's block Hadamard
  kClassifier,     // the output projection to the vocabulary
  kCount,
};

inline const char* StepStageName(StepStage s) {
  static constexpr const char* kNames[] = {"embedding", "norms",     "A8 quantize", "linear",
                                           "RoPE + KV write", "attention", "elementwise", "classifier"};
  return kNames[static_cast<int>(s)];
}

struct StepProfile {
  std::array<double, static_cast<int>(StepStage::kCount)> seconds{};
  // The parallel loops the steps ran, and the time the engine's thread spent at their ends
  // waiting for chunks other threads were still running (part of the stages' time).
  LoopStats loops;
  int64_t steps = 0;

  double total_seconds() const {
    double total = 0;
    for (double s : seconds) total += s;
    return total;
  }
};

// Charges the time since the previous mark to a stage.
class StageClock {
 public:
  using Clock = std::chrono::steady_clock;

  explicit StageClock(StepProfile* profile) : profile_(profile) {
    if (profile_ != nullptr) last_ = Clock::now();
  }
  void Mark(StepStage stage) {
    if (profile_ == nullptr) return;
    const Clock::time_point now = Clock::now();
    profile_->seconds[static_cast<int>(stage)] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  StepProfile* profile_;
  Clock::time_point last_;
};

}  // namespace accllm
