// Calibration statistics for pruning and error-compensating quantization: for every linear
// layer input, the Gram matrix H = sum over calibration tokens of x x^T (inputs to a layer's
// q/k/v share one, as do gate/up).
#pragma once

#include <array>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"
#include "runtime/reference/forward.h"

namespace accllm {

struct InputStats {
  int cols = 0;
  int64_t tokens = 0;
  std::vector<double> gram;  // cols x cols

  // sqrt(sum x_j^2): the input norm Wanda weighs column j by.
  std::vector<float> ColumnNorms() const;

  // gram's lower triangle += X^T X for `tokens` inputs (row t at x + t * ld): a float product
  // (BLAS; keep `tokens` to a few hundred) added into the double sum. `scratch` is reused.
  void AddLower(const float* x, int tokens, int64_t ld, std::vector<float>& scratch);
  // The upper triangle from the lower, once every input is in.
  void MirrorLower();
};

struct CalibrationStats {
  // [layer][ForwardObserver::Input]
  std::vector<std::array<InputStats, 4>> inputs;
  const InputStats& For(int layer, TensorKind kind) const;
};

// Runs the model in fp32 over `sequences` (each starting with BOS, at most the trained context)
// on the CPU engine, each sequence prefilled in chunks, and accumulates the statistics.
// `progress(done, total)` is called after each sequence; threads 0: one per hardware thread.
absl::StatusOr<CalibrationStats> Calibrate(const Model& model, const std::vector<std::vector<int>>& sequences,
                                           const std::function<void(int, int)>& progress = nullptr, int threads = 0);

// The same on the fp32 reference forward pass, one token at a time (the oracle).
absl::StatusOr<CalibrationStats> CalibrateOnReference(const Model& model, const std::vector<std::vector<int>>& sequences,
                                                      const std::function<void(int, int)>& progress = nullptr);

}  // namespace accllm
