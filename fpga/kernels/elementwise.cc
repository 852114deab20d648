#include "fpga/kernels/elementwise.h"

#include <cmath>

namespace {

// A8 codes of `size` values whose absolute maximum is `amax`, zero-padded to cols_padded, and the
// sum of each group's codes: the CPU's A8Batch::Quantize, value for value.
void QuantizeA8(const float* values, float amax, int size, int cols_padded, int group_size, int8_t* codes,
                float* act_scale, int32_t* group_sums) {
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  *act_scale = amax / 127.0f;
  int32_t sum = 0;
  for (int j = 0; j < cols_padded; j++) {
#pragma HLS PIPELINE II = 1
    const int8_t q = j < size ? static_cast<int8_t>(std::nearbyint(values[j] * inverse)) : int8_t{0};
    codes[j] = q;
    sum += q;
    if ((j + 1) % group_size == 0) {
      group_sums[j / group_size] = sum;
      sum = 0;
    }
  }
}

}  // namespace

extern "C" void accllm_rmsnorm_a8(const float* x, const float* weight, int size, float eps, int cols_padded,
                                  int group_size, int8_t* codes, float* act_scale, int32_t* group_sums) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = weight offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = codes offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = act_scale offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = group_sums offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  using accllm::hls::kMaxDim;
  float normalized[kMaxDim];
  float ss = 0.0f;
  for (int j = 0; j < size; j++) ss += x[j] * x[j];
  ss /= size;
  ss += eps;
  ss = 1.0f / std::sqrt(ss);
  float amax = 0.0f;
  for (int j = 0; j < size; j++) {
#pragma HLS PIPELINE II = 1
    normalized[j] = weight[j] * (ss * x[j]);
    amax = std::fmax(amax, std::fabs(normalized[j]));
  }
  QuantizeA8(normalized, amax, size, cols_padded, group_size, codes, act_scale, group_sums);
}

extern "C" void accllm_a8(const float* x, int size, int cols_padded, int group_size, int8_t* codes, float* act_scale,
                          int32_t* group_sums) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = codes offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = act_scale offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = group_sums offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  using accllm::hls::kMaxDim;
  float staged[kMaxDim];
  float amax = 0.0f;
  for (int j = 0; j < size; j++) {
#pragma HLS PIPELINE II = 1
    staged[j] = x[j];
    amax = std::fmax(amax, std::fabs(staged[j]));
  }
  QuantizeA8(staged, amax, size, cols_padded, group_size, codes, act_scale, group_sums);
}

extern "C" void accllm_rope(float* vec, int n, int head_size, int pos, float theta) {
#pragma HLS INTERFACE m_axi port = vec offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  for (int i = 0; i < n; i += 2) {
#pragma HLS PIPELINE II = 1
    const int head_dim = i % head_size;
    const float freq = 1.0f / std::pow(theta, head_dim / static_cast<float>(head_size));
    const float val = pos * freq;
    const float fcr = std::cos(val);
    const float fci = std::sin(val);
    const float v0 = vec[i];
    const float v1 = vec[i + 1];
    vec[i] = v0 * fcr - v1 * fci;
    vec[i + 1] = v0 * fci + v1 * fcr;
  }
}

extern "C" void accllm_swiglu(float* gate, const float* up, int size) {
#pragma HLS INTERFACE m_axi port = gate offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = up offset = slave bundle = gmem1
#pragma HLS INTERFACE s_axilite port = return
  for (int i = 0; i < size; i++) {
#pragma HLS PIPELINE II = 1
    float val = gate[i];
    val *= 1.0f / (1.0f + std::exp(-val));
    gate[i] = val * up[i];
  }
}

extern "C" void accllm_hadamard(float* vectors, int n, int count) {
#pragma HLS INTERFACE m_axi port = vectors offset = slave bundle = gmem0
#pragma HLS INTERFACE s_axilite port = return
  const float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int v = 0; v < count; ++v) {
    float x[256];
#pragma HLS ARRAY_PARTITION variable = x cyclic factor = 16
    for (int i = 0; i < n; ++i) x[i] = vectors[static_cast<int64_t>(v) * n + i];
    // Butterflies in the same order as runtime/common/hadamard.h, then the normalization.
    for (int len = 1; len < n; len <<= 1) {
      for (int i = 0; i < n; i += 2 * len) {
        for (int j = i; j < i + len; ++j) {
#pragma HLS UNROLL factor = 8
          const float a = x[j], b = x[j + len];
          x[j] = a + b;
          x[j + len] = a - b;
        }
      }
    }
    for (int i = 0; i < n; ++i) vectors[static_cast<int64_t>(v) * n + i] = x[i] * scale;
  }
}
