// Incoherence processing of the residual stream (QuaRot, QuIP#): the model is rewritten so that
// its residual stream lives in a randomly rotated basis, x' = Q^T x with Q = D H (D random signs,
// H the normalized Walsh-Hadamard matrix). The function computed is unchanged in exact
// arithmetic, but every weight that reads or writes the stream is multiplied by Q, which spreads
// outlier rows and columns over all of them: 2-bit groups then see flat distributions.
//
// What changes, all offline (no work at inference):
//   * RMSNorm gains fold into the layers that read their output (norms become all ones: an RMSNorm
//     commutes with an orthogonal Q once it has no per-channel gain);
//   * readers (q/k/v, gate/up, classifier): W' = W diag(g) Q;   writers (o, down): W' = Q^T W;
//   * the embedding: E' = E Q; the classifier is no longer tied to it.
// With `ffn_block` > 0 the down projection's input is rotated too, by a block-diagonal Hadamard
// (blocks of ffn_block features): its weights become W2 H offline, and the engine transforms the
// SwiGLU output online (config.ffn_hadamard_block), as the FPGA's Hadamard unit does.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"

namespace accllm {

// Q^T = H D for one width: the arithmetic RotateResidualStream applies, for code that rotates a
// model one tensor at a time (layer-by-layer quantization). note: dim must be a power of two.
class ResidualRotation {
 public:
  ResidualRotation(int dim, uint64_t seed);
  // v = Q^T v.
  void Rotate(float* v) const;
  // A reader (rows x dim): out row r = Q^T (gain * w_r).
  void Reader(const float* w, const float* gain, int rows, float* out) const;
  // A writer (dim x cols): out column j = Q^T (column j of w).
  void Writer(const float* w, int cols, float* out) const;

 private:
  std::vector<float> signs_;
};

// note: needs a power-of-two model width.
absl::StatusOr<std::unique_ptr<Model>> RotateResidualStream(const Model& model, uint64_t seed, int ffn_block = 0);

// The largest power of two that divides hidden_dim, at most 1024: the block the online Hadamard
// of the down projection's input uses.
int FfnHadamardBlock(const LlamaConfig& config);

}  // namespace accllm
