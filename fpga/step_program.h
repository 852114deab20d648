// The host side of the layer sequencer: one step's descriptor list (fpga/kernels/sequencer.h),
// built from the engine's StepPlan. Every layer is norm+A8, q/k/v, RoPE and the KV4 write,
// attention, A8 and o, residual+norm+A8, gate/up, SwiGLU (+ Hadamard), A8 and down; then the last
// residual and norm on the rows whose logits are wanted, and the classifier. The same list runs
// on a card (addresses of its buffer objects) and in C simulation (host addresses).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/kernels/sequencer.h"
#include "runtime/cpu/step_plan.h"

namespace accllm::fpga {

// Where a step's buffers are on the device. Activations are [token][width], sized for the most
// tokens a step carries; the A8 buffers for the widest linear input. The tables hold what the
// plan says, written by the caller before the start: int32 token ids, positions, KV vectors,
// sink positions, logit rows, and the attention runs of layer 0 (item_runs, item_sink_runs,
// run_start, run_count).
struct StepBuffers {
  uint64_t x = 0, y = 0, q = 0, q_raw = 0, k = 0, v = 0, att = 0, h = 0, h2 = 0;
  uint64_t queries = 0, sink_queries = 0, normalized = 0, logits = 0;  // logits: [row][vocab]
  uint64_t a8_codes = 0, a8_group_sums = 0, a8_scales = 0;
  uint64_t tokens = 0, positions = 0, kv_vectors = 0, sink_positions = 0, logit_rows = 0;
  uint64_t item_runs = 0, item_sink_runs = 0, run_start = 0, run_count = 0;
  uint64_t kv_table = 0;  // where the KV cache is: its channels and regions (hls::KvChannelTable)
};

// Where the weights are on the device: the address of a host-side buffer's copy (norm weights,
// the embedding, the fp16 classifier), of a W2 layer's stripe table (see sequencer.h, kW2A8) and
// of the W8 classifier's (kW8A8), for the card's W2A8 units.
struct WeightAddresses {
  std::function<uint64_t(const void* host)> of;
  std::function<uint64_t(const W2View& layer)> stripe_table;
  std::function<uint64_t(const W8View& classifier)> w8_stripe_table;
};

// The compute units of the card the list is for: each chain's length (fpga/kernels/unit_chain.h).
struct CardUnits {
  int w2a8 = 24;
  int attention = 2;
};

// INVALID_ARGUMENT for what the sequencer's units cannot run: linear layers that are not W2, an
// fp32 embedding or classifier, an FFN Hadamard block wider than the Hadamard unit.
absl::StatusOr<std::vector<hls::StepDescriptor>> BuildStepProgram(const StepPlan& plan, const StepBuffers& buffers,
                                                                  const WeightAddresses& weights, CardUnits units);

// The one-descriptor program that stops the card's unit chains (and the sequencer) before the
// card is closed.
hls::StepDescriptor StopDescriptor(CardUnits units);

}  // namespace accllm::fpga
