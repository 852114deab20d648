// Portable reference kernels: the definition every SIMD path must match bit for bit.
#include <cmath>
#include <cstring>

#include "runtime/common/hadamard.h"
#include "runtime/common/half.h"
#include "runtime/common/lane_sum.h"
#include "runtime/common/nn_ops.h"
#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

void MatMulW2A8Scalar(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y,
                      int64_t ldy) {
  const W2Shape& s = w.shape;
  const int groups = s.groups();
  const int stored_group = s.stored_group();
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    for (int lane = 0; lane < kW2RowTile; ++lane) {
      const int row = tile * kW2RowTile + lane;
      if (row >= s.rows) break;
      for (int t = 0; t < x.tokens(); ++t) {
        const int8_t* a = x.codes(t);
        float acc = 0.0f;
        for (int g = 0; g < groups; ++g) {
          int32_t dot = 0, kept_sum = 0;
          for (int c = g * stored_group; c < (g + 1) * stored_group; ++c) {
            const CodeSlot slot = W2CodeSlot(s, row, c);
            const int32_t q = (w.codes[slot.byte] >> slot.shift) & 3;
            if (s.sparse24) {
              const int32_t v = a[4 * (c / 2) + ((w.sparse_index[slot.byte] >> slot.shift) & 3)];
              dot += q * v;
              kept_sum += v;
            } else {
              dot += q * a[c];
            }
          }
          const int64_t pi = W2ParamIndex(row, g, groups);
          const int32_t a_sum = s.sparse24 ? kept_sum : x.group_sums(t)[g];
          const int32_t integer = 2 * dot - int32_t{w.zeros[pi]} * a_sum;  // see W2Level
          acc = std::fma(Fp16ToFloat(w.scales[pi]), static_cast<float>(integer), acc);
        }
        y[t * ldy + row] = acc * x.scale(t);
      }
    }
  }
}

void MatMulW8A8Scalar(const W8View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  const W8Shape& s = w.shape;
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    for (int lane = 0; lane < kW2RowTile; ++lane) {
      const int row = tile * kW2RowTile + lane;
      if (row >= s.rows) break;
      for (int t = 0; t < x.tokens(); ++t) {
        const int8_t* a = x.codes(t);
        float acc = 0.0f;
        for (int g = 0; g < s.groups(); ++g) {
          int32_t dot = 0;
          for (int c = g * s.group_size; c < (g + 1) * s.group_size; ++c) dot += int32_t{w.codes[W8CodeIndex(s, row, c)]} * a[c];
          acc = std::fma(w.scales[W2ParamIndex(row, g, s.groups())], static_cast<float>(dot), acc);
        }
        y[t * ldy + row] = acc * x.scale(t);
      }
    }
  }
}

void MatMulF16Scalar(const uint16_t* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin,
                     int row_end, float* y, int64_t ldy) {
  for (int r = row_begin; r < row_end; ++r) {
    const uint16_t* row = w + int64_t{r} * cols;
    for (int t = 0; t < tokens; ++t) {
      const float* xt = x + t * ldx;
      y[t * ldy + r] = LaneDot([&](int j) { return Fp16ToFloat(row[j]); }, [&](int j) { return xt[j]; }, cols);
    }
  }
}

void MatMulF32Scalar(const float* w, int cols, const float* x, int tokens, int64_t ldx, int row_begin, int row_end,
                     float* y, int64_t ldy) {
  for (int r = row_begin; r < row_end; ++r) {
    const float* row = w + int64_t{r} * cols;
    for (int t = 0; t < tokens; ++t) {
      const float* xt = x + t * ldx;
      y[t * ldy + r] = LaneDot([&](int j) { return row[j]; }, [&](int j) { return xt[j]; }, cols);
    }
  }
}

}  // namespace

void F32ScoreScalar(const float* q, const float* keys, int count, int head_size, float scale, float* scores) {
  for (int i = 0; i < count; ++i) {
    const float* k = keys + int64_t{i} * head_size;
    scores[i] = LaneDot([&](int d) { return q[d]; }, [&](int d) { return k[d]; }, head_size) * scale;
  }
}

void F32AccumulateScalar(float* out, int64_t ld_out, const float* p, int64_t ld_p, int queries, const float* values,
                         int count, int head_size) {
  for (int j = 0; j < queries; ++j) {
    float* o = out + j * ld_out;
    const float* pj = p + j * ld_p;
    for (int i = 0; i < count; ++i) {
      for (int d = 0; d < head_size; ++d) o[d] = std::fma(pj[i], values[int64_t{i} * head_size + d], o[d]);
    }
  }
}

void Kv4ScoreScalar(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count, int head_size,
                    float scale, float* scores) {
  for (int i = 0; i < count; ++i) {
    const uint8_t* c = codes + int64_t{i} * (head_size / 2);
    const float dot = LaneDot([&](int d) { return q[d]; }, [&](int d) { return Kv4Code(c, d); }, head_size);
    scores[i] = scale * (Fp16ToFloat(params[i].scale) * dot + Fp16ToFloat(params[i].min) * q_sum);
  }
}

float Kv4AccumulateScalar(float* out, const float* p, const uint8_t* codes, const Kv4Params* params, int count,
                          int head_size) {
  float min_sum = 0.0f;
  for (int i = 0; i < count; ++i) {
    const uint8_t* c = codes + int64_t{i} * (head_size / 2);
    const float ps = p[i] * Fp16ToFloat(params[i].scale);
    for (int d = 0; d < head_size; ++d) out[d] = std::fma(ps, Kv4Code(c, d), out[d]);
    min_sum += p[i] * Fp16ToFloat(params[i].min);
  }
  return min_sum;
}

namespace {

uint64_t ReadSumScalar(const uint8_t* data, int64_t bytes) {
  uint64_t sum[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < bytes; i += 32) {
    for (int j = 0; j < 4; ++j) {
      uint64_t v;
      std::memcpy(&v, data + i + 8 * j, 8);
      sum[j] += v;
    }
  }
  return sum[0] + sum[1] + sum[2] + sum[3];
}

}  // namespace

void ResidualRmsNormScalar(float* x, const float* residual, float* o, const float* weight, int size, float eps) {
  if (residual != nullptr) {
    for (int d = 0; d < size; ++d) x[d] += residual[d];
  }
  RmsNorm(o, x, weight, size, eps);
}

const CpuKernels kScalarKernels = {CpuPath::kScalar, "scalar", MatMulW2A8Scalar, MatMulW8A8Scalar, MatMulF16Scalar, MatMulF32Scalar,
                                   Kv4ScoreScalar, Kv4AccumulateScalar, QuantizeKv4, QuantizeA8, F32ScoreScalar, F32AccumulateScalar, Hadamard,
                                   Softmax, SwiGlu, ResidualRmsNormScalar, RopeAngles::ApplyRope, ReadSumScalar};

}  // namespace accllm
