#include "runtime/quant/prune24.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

namespace accllm {

std::vector<uint8_t> Select24(std::span<const float> w, int rows, int cols, PruneMethod method,
                              std::span<const float> input_norms) {
  std::vector<uint8_t> keep(static_cast<std::size_t>(rows) * cols, 0);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; c += 4) {
      std::array<float, 4> score;
      for (int j = 0; j < 4; ++j) {
        score[j] = std::fabs(w[static_cast<std::size_t>(r) * cols + c + j]);
        if (method == PruneMethod::kWanda) score[j] *= input_norms[c + j];
      }
      std::array<int, 4> order;
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
      keep[static_cast<std::size_t>(r) * cols + c + order[0]] = 1;
      keep[static_cast<std::size_t>(r) * cols + c + order[1]] = 1;
    }
  }
  return keep;
}

}  // namespace accllm
