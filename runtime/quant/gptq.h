// GPTQ (Frantar et al., 2022) for W2: quantize a layer column by column and push each column's
// rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the
// layer's inputs. With a 2:4 mask, pruned weights are "quantized" to zero and their error is
// compensated the same way (SparseGPT with a fixed mask). Group parameters are chosen when a
// group's first column is reached, from the weights as updated so far.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/quant/w2.h"

namespace accllm {

struct GptqOptions {
  double damp = 0.01;  // added to the diagonal, as a fraction of its mean
  // Quantize columns in order of decreasing input energy (GPTQ's act-order), with every group's
  // scale and zero chosen up front from the original weights ("static groups"), so the packed
  // layout is unchanged.
  bool act_order = false;
  // After a row's codes are chosen, refit its group scales jointly (zeros and codes fixed) to
  // the least (w - q)^T H (w - q): the output error over the calibration inputs, which GPTQ's
  // column-by-column choice of each group's scale does not minimize. Kept only where it lowers
  // that error after fp16 rounding.
  bool refit_scales = true;
};

// What GPTQ needs of a layer's inputs, computed once for the layers that share them (q/k/v,
// gate/up): the Cholesky factor of the damped Hessian and which inputs never fire.
//
// GPTQ is usually written with U, the upper Cholesky factor of H^-1, pushing each column's error
// onto the later columns (right-looking). With V upper and H = V V^T (so U = V^-1) the same
// algorithm reads the earlier columns' errors d_k = w_k - q_k instead: column i is rounded at
//   w_i + (sum over k < i of V[k][i] d_k) / V[i][i],
// and a group's columns, when its first is reached, stand at w + V_gg^-T (the same sums), V_gg
// the group's diagonal block: the values the right-looking updates give them. One factorization,
// no triangular inverse; and V^T d, which the sums build anyway, gives the output error
// d^T H d = |V^T d|^2 and H d = V (V^T d) for the scale refit.
struct GptqHessian {
  int n = 0;
  // V (n x n, row-major, upper) in the order columns are quantized, in float as GPTQ's reference
  // keeps its factor: twice the speed of double products.
  std::vector<float> factor;
  // What damping added to each diagonal entry of the Gram matrix (quantization order).
  std::vector<float> damping;
  std::vector<uint8_t> dead;
  // sum of x_j^2: how much each input's error costs, which weighs the choice of a group's scale
  // (what llama.cpp's importance matrix does).
  std::vector<float> importance;
  // act-order: the column quantized at step i (factor is in that order); empty: column order.
  std::vector<int> order;
  // With refit_scales: the Gram matrix in column order (n x n), without damping.
  std::vector<float> gram;
};

// `gram` is n x n (sum of x x^T over calibration inputs).
absl::StatusOr<GptqHessian> PrepareGptqHessian(std::span<const double> gram, int n, const GptqOptions& options = {});

absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, std::span<const double> gram,
                                        std::span<const uint8_t> keep = {}, const GptqOptions& options = {});
// The same from a prepared Hessian, rows spread over `pool` (null: this thread). With
// `positions` (rows x cols), also writes where each weight stood on its group's grid when it was
// rounded: its error-compensated value over the group's scale (its code is round(position) +
// zero, clamped; pruned weights: 0). Block reconstruction starts its latent weights there.
// With the scale refit (a Hessian prepared with refit_scales), `output_error` (if given) receives
// the layer's relative output error as RelativeOutputError computes it, which the refit's sums
// give for free; without it, it is left as it was.
absl::StatusOr<W2Matrix> QuantizeW2Gptq(std::span<const float> w, const W2Shape& shape, const GptqHessian& hessian,
                                        std::span<const uint8_t> keep, ThreadPool* pool,
                                        std::span<float> positions = {}, double* output_error = nullptr);

// ||(W - Q) X||^2 / ||W X||^2 over the calibration inputs, from their Gram matrix; rows spread
// over `pool` (null: this thread).
double RelativeOutputError(std::span<const float> w, const W2View& q, std::span<const double> gram,
                           ThreadPool* pool = nullptr);

}  // namespace accllm
