// A W2A8 compute unit as the card runs it: started once when the card is opened, it serves the
// kW2A8 and kW8A8 commands of its chain (unit_chain.h) until a stop, each over its stripe of the
// layer's row tiles from its own weight channel, in calls of kW2A8TokenLanes tokens through the
// engine (w2a8_engine.h, w8a8_engine.h). StripeOfUnit is the split (unit u of n takes tiles
// [T u / n, T (u + 1) / n)); the host uploads each unit's stripe by it (fpga/host/stripe_plan.h).
#pragma once

#include <cstdint>

#include "fpga/kernels/device_memory.h"
#include "fpga/kernels/unit_chain.h"

namespace accllm::hls {

struct W2A8UnitPorts {
  DevicePort<const Beat> weights;              // its weight channel: codes and 2:4 positions
  DevicePort<const uint16_t> weight_halves;    // W2 scales
  DevicePort<const uint8_t> weight_bytes;      // W2 zeros
  DevicePort<const float> weight_floats;       // W8 scales
  SharedPorts shared;                          // stripe tables, activations, group sums, outputs
};

// The row tiles unit `place` of a chain of `units` takes of a layer of `rows` rows (none for a
// unit past the layer's tiles).
struct UnitStripe {
  int tile_begin = 0, tile_end = 0;
};
UnitStripe StripeOfUnit(int rows, int units, int place);

// One command through one unit (unit_chain.h's ServeChainCommand); false for a stop.
bool ServeW2A8Command(const W2A8UnitPorts& ports, CommandStream& in, CommandStream& out, TokenStream& done_in,
                      TokenStream& done_out);

}  // namespace accllm::hls

// The unit's top function. Its weight masters are set to a buffer in its channel (device address
// weight_base), its shared masters to one in the shared channels (shared_base); streams last.
extern "C" void accllm_w2a8(const accllm::hls::Beat* weights, const uint16_t* weight_halves,
                            const uint8_t* weight_bytes, const float* weight_floats, uint64_t weight_base,
                            const uint64_t* shared_words, const int8_t* shared_codes, const int32_t* shared_ints,
                            float* shared_floats, uint64_t shared_base, accllm::hls::CommandStream& commands_in,
                            accllm::hls::CommandStream& commands_out, accllm::hls::TokenStream& done_in,
                            accllm::hls::TokenStream& done_out);
