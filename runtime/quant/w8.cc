#include "runtime/quant/w8.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/common/half.h"
#include "runtime/common/round.h"

namespace accllm {

W8Matrix::W8Matrix(const W8Shape& s)
    : shape(s),
      codes(static_cast<std::size_t>(s.rows_padded()) * s.cols_padded(), 0),
      scales(static_cast<std::size_t>(s.rows_padded()) * s.groups(), 0.0f),
      sums(scales.size(), 0) {}

absl::StatusOr<W8Matrix> QuantizeW8(std::span<const uint16_t> f16, const W8Shape& shape) {
  if (absl::Status s = ValidateW2Shape({shape.rows, shape.cols, shape.group_size, false}); !s.ok()) return s;
  if (f16.size() != static_cast<std::size_t>(shape.rows) * shape.cols) {
    return absl::InvalidArgumentError(absl::StrCat("W8: ", f16.size(), " weights for a ", shape.rows, " x ", shape.cols, " matrix"));
  }
  W8Matrix m(shape);
  std::vector<float> row(shape.cols_padded(), 0.0f);
  for (int r = 0; r < shape.rows; ++r) {
    for (int c = 0; c < shape.cols; ++c) row[c] = Fp16ToFloat(f16[static_cast<std::size_t>(r) * shape.cols + c]);
    for (int g = 0; g < shape.groups(); ++g) {
      float amax = 0.0f;
      for (int c = g * shape.group_size; c < (g + 1) * shape.group_size; ++c) amax = std::max(amax, std::fabs(row[c]));
      const float scale = amax / 127.0f, inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (int c = g * shape.group_size; c < (g + 1) * shape.group_size; ++c) {
        const auto q = static_cast<int8_t>(RoundHalfEven(row[c] * inverse));
        m.codes[W8CodeIndex(shape, r, c)] = q;
        sum += q;
      }
      const int64_t pi = W2ParamIndex(r, g, shape.groups());
      m.scales[pi] = scale;
      m.sums[pi] = sum;
    }
  }
  return m;
}

void DequantizeW8Row(const W8View& w, int row, std::span<float> out) {
  for (int c = 0; c < w.shape.cols; ++c) {
    const float scale = w.scales[W2ParamIndex(row, c / w.shape.group_size, w.shape.groups())];
    out[c] = scale * static_cast<float>(w.codes[W8CodeIndex(w.shape, row, c)]);
  }
}

}  // namespace accllm
