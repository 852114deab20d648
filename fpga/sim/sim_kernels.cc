#include "fpga/sim/sim_kernels.h"

#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/w2a8_engine.h"

namespace accllm::fpga {
namespace {

static_assert(sizeof(hls::Kv4Param) == sizeof(Kv4Params), "KV4 parameters differ between host and kernel");
static_assert(sizeof(hls::Beat) == kW2SubBlockBytes, "one W2 sub-block is one HBM beat");

void SimW2A8(const W2View& w, const A8Batch& x, int tile_begin, int tile_end, float* y, int64_t ldy) {
  const W2Shape& s = w.shape;
  accllm_w2a8(reinterpret_cast<const hls::Beat*>(w.codes), reinterpret_cast<const hls::Beat*>(w.sparse_index),
              w.scales, w.zeros, x.codes(0), x.group_sums(0), x.scales(), y, s.rows, s.cols_padded(), s.group_size,
              s.sparse24 ? 1 : 0, x.tokens(), static_cast<int>(ldy), tile_begin, tile_end);
}

void SimKv4Score(const float* q, float q_sum, const uint8_t* codes, const Kv4Params* params, int count, int head_size,
                 float scale, float* scores) {
  hls::Kv4Score(q, q_sum, codes, reinterpret_cast<const hls::Kv4Param*>(params), count, head_size, scale, scores);
}

float SimKv4Accumulate(float* out, const float* p, const uint8_t* codes, const Kv4Params* params, int count,
                       int head_size) {
  return hls::Kv4Accumulate(out, p, codes, reinterpret_cast<const hls::Kv4Param*>(params), count, head_size);
}

CpuKernels MakeTable() {
  absl::StatusOr<const CpuKernels*> host = SelectedKernels();
  const CpuKernels& h = host.ok() ? **host : kScalarKernels;
  return {h.path, "hls-csim", SimW2A8, h.matmul_f16, SimKv4Score, SimKv4Accumulate, h.read_sum};
}

}  // namespace

const CpuKernels& FpgaSimKernels() {
  static const CpuKernels table = MakeTable();
  return table;
}

}  // namespace accllm::fpga
