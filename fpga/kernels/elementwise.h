// The element-wise units between the W2A8 engine's layers, in the same float order as the CPU
// engine (runtime/common/nn_ops.h) so that both produce the same tokens:
//   * RMSNorm fused with A8 quantization: the normalized vector never leaves the chip; out come
//     int8 codes, the per-token scale and the per-group code sums the W2A8 engine needs;
//   * RoPE (Meta/llama2.c pair layout), SwiGLU;
//   * the Hadamard rotation of KV4 head vectors (and of queries and attention outputs).
#pragma once

#include <cstdint>

namespace accllm::hls {

inline constexpr int kMaxDim = 16384;
// Vectors the Hadamard unit rotates together (its loops run over all of them at once), and the
// butterfly stages one of its passes over them takes: four, so that a pass's deepest group of
// values is one beat (16), and a head of 128 or an FFN block of 256 takes two passes, not three.
inline constexpr int kHadamardBlock = 32;
inline constexpr int kHadamardPassStages = 4;

}  // namespace accllm::hls

extern "C" void accllm_rmsnorm_a8(const float* x, const float* weight, int size, float eps, int cols_padded,
                                  int group_size, int8_t* codes, float* act_scale, int32_t* group_sums);
// A8 alone (the attention output and the FFN's hidden vector, which no norm precedes).
extern "C" void accllm_a8(const float* x, int size, int cols_padded, int group_size, int8_t* codes, float* act_scale,
                          int32_t* group_sums);
extern "C" void accllm_rope(float* vec, int n, int head_size, int pos, float theta);
extern "C" void accllm_swiglu(float* gate, const float* up, int size);
// Rotates `count` vectors of `n` values (n a power of two, at most 256) in place.
extern "C" void accllm_hadamard(float* vectors, int n, int count);
