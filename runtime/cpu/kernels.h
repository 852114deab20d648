// CPU kernels, one implementation per instruction set behind a table chosen once at run time.
//
// Every path computes the same integers and performs the same float operations in the same order
// (float sums: runtime/common/lane_sum.h), so all paths give bit-identical results (the tests check
// this), and so do the accelerator's units. For W2 x A8 the result is
//
//   y[t][r] = a_scale[t] * Y,   Y = fma(scale[r][g], float(I[r][g]), Y) for g = 0, 1, ...
//   I[r][g] = 2 sum_j q[r][j] * a[t][j]  -  zero[r][g] * sum_j a[t][j]    (j over group g; W2Level)
//
// where for 2:4 tensors j runs over the kept weights only.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/kv/kv_storage.h"
#include "runtime/quant/a8.h"
#include "runtime/quant/w2.h"
#include "runtime/quant/w8.h"

namespace accllm {

// y[t * ldy + r] = W x_t for the rows of row tiles [tile_begin, tile_end) and every token of x.
// note: call only with x.cols_padded() == w.shape.cols_padded() and x.group_size() ==
// w.shape.group_size.
using W2A8MatMulFn = void (*)(const W2View& w, const A8Batch& x, int tile_begin, int tile_end,
                              float* y, int64_t ldy);

// The same for W8 weights (the 8-bit classifier), with the same epilogue:
//   y[t][r] = a_scale[t] * Y,   Y = fma(scale[r][g], float(I[r][g]), Y),   I[r][g] = sum_j q[r][j] * a[t][j]
// note: call only with x.cols_padded() == w.shape.cols_padded() and x.group_size() == w.shape.group_size.
using W8A8MatMulFn = void (*)(const W8View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy);

// y[t * ldy + r] = sum_j w[r][j] * x[t * ldx + j] for rows [row_begin, row_end), fp16 weights
// (out x in, row-major) and fp32 activations: the classifier and other high-precision layers.
using F16MatMulFn = void (*)(const uint16_t* w, int cols, const float* x, int tokens, int64_t ldx,
                             int row_begin, int row_end, float* y, int64_t ldy);

// The same with fp32 weights: fp32 models on the CPU engine.
using F32MatMulFn = void (*)(const float* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin,
                             int row_end, float* y, int64_t ldy);

// KV4 attention over `count` consecutive cached vectors of one head (one page run), reading the
// codes directly (see kv/kv_storage.h):
//   scores[i] = scale * (s_i * (q . codes_i) + min_i * q_sum)
using Kv4ScoreFn = void (*)(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count,
                            int head_size, float scale, float* scores);
//   out += sum_i p_i * s_i * codes_i, and returns sum_i p_i * min_i (added to every element later)
using Kv4AccumulateFn = float (*)(float* out, const float* p, const uint8_t* codes, const Kv4Params* params,
                                  int count, int head_size);

// The same over an fp32 cache (full-precision KV): scores[i] = scale * (q . keys_i) for `count`
// consecutive vectors of head_size floats;
using F32ScoreFn = void (*)(const float* q, const float* keys, int count, int head_size, float scale, float* scores);
// and for `queries` queries at a time, out[j] += sum_i p[j][i] * values_i (out[j] at out + j * ld_out,
// p[j] at p + j * ld_p): each value vector is read once for all of them, and each element adds its
// products in key order, as for one query alone. (The KV4 attention of items that read the same
// keys runs on these too, with the keys' codes as floats: cpu_attention.cc.)
using F32AccumulateFn = void (*)(float* out, int64_t ld_out, const float* p, int64_t ld_p, int queries,
                                 const float* values, int count, int head_size);

// x <- the normalized Walsh-Hadamard transform of its n values (n a power of two), with the
// butterflies of runtime/common/hadamard.h's Hadamard in the same order: the KV cache's head
// rotation (keys, values, queries and attention outputs of every head of every token).
// The scalar path's are the shared functions themselves (Hadamard, Softmax, SwiGlu).
using HadamardFn = void (*)(float* x, int n);

// Softmax of n scores in place (n >= 1), as runtime/common/nn_ops.h's Softmax: the maximum,
// e^(x - max) (exp.h) and their sum in index order, then each divided by the sum.
using SoftmaxFn = void (*)(float* x, int n);

// h = silu(h) * h2, element by element, as nn_ops.h's SwiGlu.
using SwiGluFn = void (*)(float* h, const float* h2, int n);

// RoPE of n values (heads of 2 * half back to back), as nn_ops.h's RopeAngles::Apply with the
// angles' cosines and sines as arrays of `half`.
using RopeFn = void (*)(float* vec, int n, const float* cos, const float* sin, int half);

// x += residual (element by element; skipped when residual is null), then o = nn_ops.h's
// RmsNorm(x): the squares summed in lane_sum.h's 64 lanes. o may be residual.
using ResidualRmsNormFn = void (*)(float* x, const float* residual, float* o, const float* weight, int size, float eps);

// Sums `bytes` bytes (a multiple of 256) as 64-bit words with the widest loads the path has,
// prefetching kReadSumAhead bytes ahead as the W2 kernels prefetch their next row tile: the
// memory read-bandwidth probe that speed is held against.
using ReadSumFn = uint64_t (*)(const uint8_t* data, int64_t bytes);
inline constexpr int64_t kReadSumAhead = 16384;  // a 4096-column row tile

enum class CpuPath { kScalar, kAvx2, kAvx2Vnni, kAvx512, kAmx };
inline constexpr CpuPath kAllCpuPaths[] = {CpuPath::kScalar, CpuPath::kAvx2, CpuPath::kAvx2Vnni, CpuPath::kAvx512,
                                           CpuPath::kAmx};

struct CpuKernels {
  CpuPath path;
  const char* name;
  W2A8MatMulFn matmul_w2a8;
  W8A8MatMulFn matmul_w8a8;
  F16MatMulFn matmul_f16;
  F32MatMulFn matmul_f32;
  Kv4ScoreFn kv4_score;
  Kv4AccumulateFn kv4_accumulate;
  Kv4QuantizeFn kv4_quantize;  // QuantizeKv4's results (runtime/kv/kv_storage.h)
  A8QuantizeFn a8_quantize;    // QuantizeA8's results (runtime/quant/a8.h)
  F32ScoreFn f32_score;
  F32AccumulateFn f32_accumulate;
  HadamardFn hadamard;
  SoftmaxFn softmax;
  SwiGluFn swiglu;
  ResidualRmsNormFn residual_rms_norm;
  RopeFn rope;
  ReadSumFn read_sum;
};

// The portable KV4 kernels, which the SIMD paths fall back to for head sizes they do not cover.
void Kv4ScoreScalar(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count, int head_size,
                    float scale, float* scores);
float Kv4AccumulateScalar(float* out, const float* p, const uint8_t* codes, const Kv4Params* params, int count,
                          int head_size);

// The kernels for `path`, or an error if this CPU (or OS) cannot run them.
// The scalar fp32-cache attention, which SIMD paths fall back to for odd head sizes.
void F32ScoreScalar(const float* q, const float* keys, int count, int head_size, float scale, float* scores);
void F32AccumulateScalar(float* out, int64_t ld_out, const float* p, int64_t ld_p, int queries, const float* values,
                         int count, int head_size);

absl::StatusOr<const CpuKernels*> KernelsFor(CpuPath path);

// The best kernels this CPU supports, unless $ACCLLM_CPU_PATH (scalar, avx2, avx2-vnni, avx512,
// amx) forces one.
// Chosen once per process.
absl::StatusOr<const CpuKernels*> SelectedKernels();

absl::StatusOr<CpuPath> ParseCpuPath(const std::string& name);

// Per-ISA tables (defined in kernels_<isa>.cc).
extern const CpuKernels kScalarKernels;
extern const CpuKernels kAvx2Kernels;
extern const CpuKernels kAvx2VnniKernels;      // VEX vpdpbusd (AVX-VNNI)
extern const CpuKernels kAvx2VnniEvexKernels;  // EVEX vpdpbusd on ymm (AVX512-VNNI + VL)
extern const CpuKernels kAvx512Kernels;
extern const CpuKernels kAmxKernels;           // kAvx512Kernels with W2 x A8 on AMX-INT8 tiles

}  // namespace accllm
