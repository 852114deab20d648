#include "fpga/kernels/w2a8_unit.h"

#include <algorithm>

#include "fpga/kernels/w2a8_engine.h"
#include "fpga/kernels/w8a8_engine.h"

namespace accllm::hls {
namespace {

constexpr int kRowTile = 16;  // rows per W2/W8 row tile (runtime/quant/w2.h kW2RowTile)

// y = W x over the unit's stripe, in calls of at most T tokens; each call's outputs land at the
// stripe's first row.
void RunLinear(const StepDescriptor& d, int place, const W2A8UnitPorts& ports) {
  const bool w8 = d.op == StepOp::kW8A8;
  const int rows = d.n[0], cols_padded = d.n[1], group_size = d.n[2];
  const int ldy = w8 ? d.n[3] : d.n[4], units = w8 ? d.n[4] : d.n[5];
  const UnitStripe s = StripeOfUnit(rows, units, place);
  if (s.tile_end == s.tile_begin) return;
  const int row0 = s.tile_begin * kRowTile, stripe_rows = std::min(rows, s.tile_end * kRowTile) - row0;
  const int tiles = s.tile_end - s.tile_begin, groups = cols_padded / group_size;
  const SharedPorts& shared = ports.shared;
  const uint64_t* stripe = shared.At<const uint64_t>(d.p[0]) + (w8 ? 2 : 4) * place;
  for (int t0 = 0; t0 < d.tokens; t0 += kW2A8TokenLanes) {
    const int n = std::min(kW2A8TokenLanes, d.tokens - t0);
    const int8_t* codes = shared.At<const int8_t>(d.p[1]) + static_cast<int64_t>(t0) * cols_padded;
    if (w8) {
      W8A8Engine<kW2A8TokenLanes>(ports.weights.At(stripe[0]), ports.weight_floats.At(stripe[1]), codes,
                                  shared.At<const float>(d.p[2]) + t0,
                                  shared.At<float>(d.p[3]) + static_cast<int64_t>(t0) * ldy + row0, stripe_rows,
                                  cols_padded, group_size, n, ldy, 0, tiles);
    } else {
      W2A8Engine<kW2A8TokenLanes>(ports.weights.At(stripe[0]), ports.weights.At(stripe[1]),
                                  ports.weight_halves.At(stripe[2]), ports.weight_bytes.At(stripe[3]), codes,
                                  shared.At<const int32_t>(d.p[2]) + static_cast<int64_t>(t0) * groups,
                                  shared.At<const float>(d.p[3]) + t0,
                                  shared.At<float>(d.p[4]) + static_cast<int64_t>(t0) * ldy + row0, stripe_rows,
                                  cols_padded, group_size, d.n[3], n, ldy, 0, tiles);
    }
  }
}

}  // namespace

UnitStripe StripeOfUnit(int rows, int units, int place) {
  const int tiles = (rows + kRowTile - 1) / kRowTile;
  const int used = std::max(1, std::min(units, tiles));
  if (place >= used) return {};
  return {static_cast<int>(static_cast<int64_t>(tiles) * place / used),
          static_cast<int>(static_cast<int64_t>(tiles) * (place + 1) / used)};
}

bool ServeW2A8Command(const W2A8UnitPorts& ports, CommandStream& in, CommandStream& out, TokenStream& done_in,
                      TokenStream& done_out) {
  return ServeChainCommand(in, out, done_in, done_out,
                           [&](const StepDescriptor& d, int place) { RunLinear(d, place, ports); });
}

}  // namespace accllm::hls

extern "C" void accllm_w2a8(const accllm::hls::Beat* weights, const uint16_t* weight_halves,
                            const uint8_t* weight_bytes, const float* weight_floats, uint64_t weight_base,
                            const uint64_t* shared_words, const int8_t* shared_codes, const int32_t* shared_ints,
                            float* shared_floats, uint64_t shared_base, accllm::hls::CommandStream& commands_in,
                            accllm::hls::CommandStream& commands_out, accllm::hls::TokenStream& done_in,
                            accllm::hls::TokenStream& done_out) {
// Two AXI masters: the unit's own weight channel (codes, 2:4 positions, scales and zeros, read
// tile after tile), and the shared channels (the stripe table, the call's activations, read once
// into on-chip buffers, and the outputs). Started once; returns at a stop command.
#pragma HLS INTERFACE m_axi port = weights offset = slave bundle = gmem0 max_read_burst_length = 64
#pragma HLS INTERFACE m_axi port = weight_halves offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = weight_bytes offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = weight_floats offset = slave bundle = gmem0
#pragma HLS INTERFACE m_axi port = shared_words offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_codes offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_ints offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = shared_floats offset = slave bundle = gmem1
#pragma HLS INTERFACE axis port = commands_in
#pragma HLS INTERFACE axis port = commands_out
#pragma HLS INTERFACE axis port = done_in
#pragma HLS INTERFACE axis port = done_out
#pragma HLS INTERFACE s_axilite port = return
  using namespace accllm::hls;
  W2A8UnitPorts ports;
  ports.weights = {weights, weight_base};
  ports.weight_halves = {weight_halves, weight_base};
  ports.weight_bytes = {weight_bytes, weight_base};
  ports.weight_floats = {weight_floats, weight_base};
  ports.shared.u64 = {const_cast<uint64_t*>(shared_words), shared_base};
  ports.shared.i8 = {const_cast<int8_t*>(shared_codes), shared_base};
  ports.shared.i32 = {const_cast<int32_t*>(shared_ints), shared_base};
  ports.shared.f32 = {shared_floats, shared_base};
  while (ServeW2A8Command(ports, commands_in, commands_out, done_in, done_out)) {
  }
}
