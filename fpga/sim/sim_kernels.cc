#include "fpga/sim/sim_kernels.h"

#include <algorithm>

#include "fpga/kernels/w2a8_engine.h"

namespace accllm::fpga {
namespace {

static_assert(sizeof(hls::Beat) == kW2SubBlockBytes, "one W2 sub-block is one HBM beat");

// The step's tokens in calls of at most T, as the card's host driver issues them.
void SimW2A8(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  for (int t0 = 0; t0 < x.tokens(); t0 += hls::kW2A8TokenLanes) {
    const int n = std::min(hls::kW2A8TokenLanes, x.tokens() - t0);
    accllm_w2a8(reinterpret_cast<const hls::Beat*>(w.codes), reinterpret_cast<const hls::Beat*>(w.sparse_index),
                w.scales, w.zeros, x.codes(t0), x.group_sums(t0), x.scales() + t0, y + t0 * ldy, s.rows,
                s.cols_padded(), s.group_size, s.sparse24 ? 1 : 0, n, static_cast<int>(ldy), tile_begin, tile_end);
  }
}

CpuKernels MakeTable() {
  absl::StatusOr<const CpuKernels*> host = SelectedKernels();
  const CpuKernels& h = host.ok() ? **host : kScalarKernels;
  // The classifier (fp16 or W8) stays on the host's kernels. Attention does not come through this
  // table: fpga-sim hands whole attention batches to the simulated attention unit
  // (fpga_sim_backend.cc).
  return {h.path,           "hls-csim",       SimW2A8,     h.matmul_w8a8,     h.matmul_f16, h.matmul_f32,
          h.kv4_score,      h.kv4_accumulate, h.f32_score, h.f32_accumulate, h.read_sum};
}

}  // namespace

const CpuKernels& FpgaSimKernels() {
  static const CpuKernels table = MakeTable();
  return table;
}

}  // namespace accllm::fpga
