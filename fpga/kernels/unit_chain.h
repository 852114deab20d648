// How the sequencer drives the compute units it does not contain: the 24 W2A8 units and the 2
// attention units are kernels of their own, started once when the card is opened and run until
// told to stop, each a link of a chain over AXI4-Stream (fpga/build/u280.cfg's stream_connect
// lines): sequencer -> unit 1 -> ... -> unit n -> sequencer, for commands and for done tokens.
// A unit forwards each command before it runs it, so a chain's units start one hop apart and run
// together, each over its share of the op; it passes the done token on once it is done and the
// token from the units before it has arrived, so the token that returns to the sequencer says the
// whole chain is done. The command carries the step's descriptor as written and the reader's place
// in the chain (sent as 0, forwarded +1), so identical units find their share without arguments.
#pragma once

#include <cstdint>
#ifndef ACCLLM_VITIS_HLS
#include <vector>
#endif

#include "fpga/kernels/hls_compat.h"
#include "fpga/kernels/step_descriptor.h"

namespace accllm::hls {

struct UnitCommand {
  StepDescriptor d;   // kW2A8, kW8A8, kAttention, or kStop
  int32_t place = 0;  // the reading unit's place in its chain
};
struct UnitToken {
  int32_t units = 0;  // units done so far along the chain
};
using CommandStream = Stream<UnitCommand>;
using TokenStream = Stream<UnitToken>;

// A stream hop between neighbouring kernels (a FIFO and a register slice; assumed, not
// synthesized here), and what a command through a chain of `units` units adds to its units' work:
// unit k gets it k hops after it left the sequencer, so the last unit starts `units` hops late;
// the done token keeps pace with the units' staggered finishes and returns one hop after the last
// unit's.
inline constexpr int kStreamHopCycles = 4;
inline int64_t ChainRoundTripCycles(int units) { return (int64_t{units} + 1) * kStreamHopCycles; }

// One command through one unit: read, forwarded, run (`run(descriptor, place)`) unless it is a
// stop, then the done token passed on. False for a stop: the unit's kernel returns.
template <typename Run>
bool ServeChainCommand(CommandStream& in, CommandStream& out, TokenStream& done_in, TokenStream& done_out,
                       const Run& run) {
  UnitCommand c = in.read();
  const int32_t place = c.place;
  c.place = place + 1;
  out.write(c);
  const bool stop = c.d.op == StepOp::kStop;
  if (!stop) run(c.d, place);
  UnitToken token = done_in.read();
  token.units += 1;
  done_out.write(token);
  return !stop;
}

// The sequencer's ends of a chain.
struct ChainEnds {
  CommandStream& commands;   // to the first unit
  CommandStream& returned;   // the last unit's forwarded commands
  TokenStream& seed;         // the first unit's done_in
  TokenStream& done;         // the last unit's done_out
};

// One command through a chain of `units` units, waited for. On a card the units are running
// kernels; in C simulation they run here one after another, `serve(in, out, done_in, done_out)`
// being one unit serving one command. Returns the units that reported done.
template <typename Serve>
int RunOnChain(const StepDescriptor& d, int units, ChainEnds& ends, const Serve& serve) {
  ends.commands.write({d, 0});
  ends.seed.write({0});
#ifndef ACCLLM_VITIS_HLS
  // Links between the units (none before the first or after the last).
  std::vector<CommandStream> commands(units > 1 ? units - 1 : 0);
  std::vector<TokenStream> tokens(commands.size());
  for (int u = 0; u < units; ++u) {
    serve(u == 0 ? ends.commands : commands[u - 1], u == units - 1 ? ends.returned : commands[u],
          u == 0 ? ends.seed : tokens[u - 1], u == units - 1 ? ends.done : tokens[u]);
  }
#endif
  ends.returned.read();
  return ends.done.read().units;
}

}  // namespace accllm::hls
