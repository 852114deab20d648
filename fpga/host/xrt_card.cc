#include "fpga/host/xrt_card.h"

#include <experimental/xrt_system.h>
#include <experimental/xrt_xclbin.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "absl/strings/str_cat.h"
#include "fpga/device_limits.h"
#include "fpga/host/kernel_signatures.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/step_program.h"
#include "runtime/common/status_macros.h"

namespace accllm::fpga {
namespace {

constexpr const char* kW2A8 = "accllm_w2a8";
constexpr const char* kAttention = "accllm_kv4_attention";
constexpr const char* kSequencer = "accllm_sequencer";

// A buffer in `bank`, in whole 4 KiB pages: XRT refuses empty buffers, and backs each with
// aligned_alloc(4096, size), which C requires to be a multiple of the alignment.
xrt::bo Buffer(const xrt::device& device, int64_t bytes, int bank) {
  const int64_t pages = std::max<int64_t>(1, (bytes + 4095) / 4096);
  return xrt::bo(device, static_cast<std::size_t>(pages * 4096), static_cast<xrt::memory_group>(bank));
}

}  // namespace

int CountCards() {
  try {
    const unsigned int n = xrt::system::enumerate_devices();
    if (n > 0) return static_cast<int>(n);
    // Emulation shims enumerate nothing but open device 0.
    xrt::device probe(0);
    return 1;
  } catch (const std::exception&) {
    return 0;
  }
}

absl::StatusOr<std::unique_ptr<XrtCard>> XrtCard::Open(int index, const std::string& xclbin_path) {
  auto card = std::unique_ptr<XrtCard>(new XrtCard());
  try {
    card->device_ = xrt::device(static_cast<unsigned int>(index));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot open FPGA card ", index, ": ", e.what()));
  }
  std::vector<xrt::kernel> sequencers;
  try {
    const xrt::xclbin xclbin(xclbin_path);
    card->platform_ = xclbin.get_xsa_name();
    // The card's shell must be the platform the xclbin was linked for. Emulation shims answer no
    // device queries; then the check is left to load_xclbin.
    try {
      const std::string shell = card->device_.get_info<xrt::info::device::name>();
      if (!shell.empty() && shell != card->platform_) {
        return absl::FailedPreconditionError(absl::StrCat("card ", index, " runs shell '", shell, "' but '", xclbin_path,
                                                          "' was built for '", card->platform_, "'"));
      }
    } catch (const std::exception&) {
    }
    const xrt::uuid uuid = card->device_.load_xclbin(xclbin);
    for (const xrt::xclbin::kernel& k : xclbin.get_kernels()) {
      std::vector<xrt::kernel>* units = k.get_name() == kW2A8        ? &card->units_
                                        : k.get_name() == kAttention ? &card->attention_units_
                                        : k.get_name() == kSequencer ? &sequencers
                                                                     : nullptr;
      if (units == nullptr) continue;
      for (const xrt::xclbin::ip& cu : k.get_cus()) {
        const std::string name = cu.get_name();  // "accllm_w2a8:accllm_w2a8_3"
        const std::string instance = name.substr(name.find(':') + 1);
        units->emplace_back(card->device_, uuid, absl::StrCat(k.get_name(), ":{", instance, "}"));
      }
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot load '", xclbin_path, "' on card ", index, ": ", e.what()));
  }
  for (const auto& [units, kernel] : {std::pair{&card->units_, kW2A8}, {&card->attention_units_, kAttention}, {&sequencers, kSequencer}}) {
    if (units->empty()) {
      return absl::FailedPreconditionError(absl::StrCat("'", xclbin_path, "' has no ", kernel, " compute units"));
    }
  }
  card->sequencer_ = sequencers[0];
  card->step_bank_ = card->sequencer_.group_id(kSequencerProgram);
  for (int c = 0; c < 4; ++c) card->kv_banks_[c] = card->attention_units_[0].group_id(kAttnKv0 + c);
  try {
    card->shared_anchor_ = Buffer(card->device_, 4096, card->step_bank_);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot allocate on card ", index, ": ", e.what()));
  }
  return card;
}

XrtCard::~XrtCard() {
  if (unit_runs_.empty()) return;
  // The units run until told to stop: one sequencer start whose program is a stop.
  try {
    const hls::StepDescriptor stop = StopDescriptor(card_units());
    xrt::bo program = CopyToCard(&stop, sizeof stop, step_bank_);
    xrt::run run = StartSequencer(program, 1);
    run.wait(run_timeout_);
    for (xrt::run& unit : unit_runs_) unit.wait(run_timeout_);
  } catch (const std::exception&) {
    // A card that cannot be stopped is being closed anyway; the driver resets it on the next load.
  }
}

void XrtCard::SetShared(xrt::run& run, std::initializer_list<int> masters, int base_arg) {
  for (int arg : masters) run.set_arg(arg, shared_anchor_);
  run.set_arg(base_arg, shared_anchor_.address());
}

void XrtCard::StartUnits() {
  // Each unit's masters point at an anchor buffer in the bank they are connected to; the commands
  // carry device addresses, reached from there (fpga/kernels/device_memory.h).
  for (xrt::kernel& unit : units_) {
    xrt::bo& anchor = weight_anchors_.emplace_back(Buffer(device_, 4096, unit.group_id(kW2A8Weights)));
    xrt::run run(unit);
    for (int arg : {kW2A8Weights, kW2A8WeightHalves, kW2A8WeightBytes, kW2A8WeightFloats}) run.set_arg(arg, anchor);
    run.set_arg(kW2A8WeightBase, anchor.address());
    SetShared(run, {kW2A8SharedWords, kW2A8SharedCodes, kW2A8SharedInts, kW2A8SharedFloats}, kW2A8SharedBase);
    run.start();
    unit_runs_.push_back(std::move(run));
  }
  for (xrt::kernel& unit : attention_units_) {
    xrt::run run(unit);
    SetShared(run, {kAttnSharedFloats, kAttnSharedInts, kAttnSharedWords}, kAttnSharedBase);
    for (int c = 0; c < hls::kKvChannels; ++c) run.set_arg(kAttnKv0 + c, kv_channels_[c]);
    run.start();
    unit_runs_.push_back(std::move(run));
  }
}

xrt::run XrtCard::StartSequencer(const xrt::bo& program, int count) {
  xrt::run run(sequencer_);
  run.set_arg(kSequencerProgram, program);
  run.set_arg(kSequencerCount, count);
  SetShared(run,
            {kSequencerSharedFloats, kSequencerSharedInts, kSequencerSharedCodes, kSequencerSharedBytes,
             kSequencerSharedHalves, kSequencerSharedWords},
            kSequencerSharedBase);
  for (int c = 0; c < hls::kKvChannels; ++c) run.set_arg(kSequencerKv0 + c, kv_channels_[c]);
  run.start();
  return run;
}

xrt::bo XrtCard::CopyToCard(const void* data, int64_t bytes, int bank) {
  xrt::bo bo = Buffer(device_, bytes, bank);
  if (bytes > 0) {
    bo.write(data, static_cast<std::size_t>(bytes), 0);
    bo.sync(XCL_BO_SYNC_BO_TO_DEVICE);
  }
  return bo;
}

absl::Status XrtCard::Upload(const W2View& w) {
  std::lock_guard<std::mutex> lock(mutex_);
  const W2Shape& s = w.shape;
  LayerOnCard layer;
  std::vector<uint64_t> table;  // per unit: codes, 2:4 index (0: dense), scales, zeros
  try {
    for (const Stripe& plan : PlanStripes(s, units())) {
      const xrt::kernel& k = units_[plan.unit];
      StripeBuffers st;
      st.codes = CopyToCard(w.codes + plan.code_offset, plan.code_bytes, k.group_id(kW2A8Weights));
      if (s.sparse24) st.index = CopyToCard(w.sparse_index + plan.code_offset, plan.code_bytes, k.group_id(kW2A8Weights));
      st.scales = CopyToCard(w.scales + plan.param_offset, plan.param_count * 2, k.group_id(kW2A8WeightHalves));
      st.zeros = CopyToCard(w.zeros + plan.param_offset, plan.param_count, k.group_id(kW2A8WeightBytes));
      table.insert(table.end(), {st.codes.address(), s.sparse24 ? st.index.address() : 0, st.scales.address(),
                                 st.zeros.address()});
      layer.stripes.push_back(std::move(st));
    }
    layer.stripe_table = CopyToCard(table.data(), static_cast<int64_t>(table.size() * sizeof(uint64_t)), step_bank_);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot place a ", s.rows, "x", s.cols, " layer on the card: ", e.what()));
  }
  layers_[w.codes] = std::move(layer);
  return absl::OkStatus();
}

absl::Status XrtCard::PlaceKv(const LlamaConfig& config, int page_tokens, int pages) {
  std::lock_guard<std::mutex> lock(mutex_);
  const KvPlacement placement = fpga::PlaceKv(config, page_tokens, pages);
  try {
    uint64_t channels[hls::kKvChannels];
    for (int c = 0; c < hls::kKvChannels; ++c) {
      kv_channels_[c] = Buffer(device_, placement.channel_bytes, kv_banks_[c]);
      channels[c] = kv_channels_[c].address();
    }
    const hls::KvChannelTable table = placement.Table(channels);
    kv_table_ = CopyToCard(&table, sizeof table, step_bank_);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot place the KV cache (", pages, " pages) on the card: ", e.what()));
  }
  return absl::OkStatus();
}

uint64_t XrtCard::Reserve(DeviceArray& array, int64_t bytes) {
  if (bytes > array.capacity || array.capacity == 0) {
    array.capacity = std::max({bytes, 2 * array.capacity, int64_t{4096}});
    array.bo = Buffer(device_, array.capacity, step_bank_);
  }
  return array.bo.address();
}

uint64_t XrtCard::Stage(DeviceArray& array, const void* data, int64_t bytes) {
  const uint64_t address = Reserve(array, bytes);
  if (bytes > 0) {
    array.bo.write(data, static_cast<std::size_t>(bytes), 0);
    array.bo.sync(XCL_BO_SYNC_BO_TO_DEVICE, static_cast<std::size_t>(bytes), 0);
  }
  return address;
}

absl::Status XrtCard::EnsureStepWeights(const EngineWeights& w) {
  const LlamaConfig& c = w.config;
  std::vector<std::pair<const void*, int64_t>> tensors = {
      {w.embedding_f16, int64_t{c.vocab_size} * c.dim * 2}, {w.rms_final, int64_t{c.dim} * 4}};
  for (const EngineLayer& layer : w.layers) {
    tensors.emplace_back(layer.rms_att, int64_t{c.dim} * 4);
    tensors.emplace_back(layer.rms_ffn, int64_t{c.dim} * 4);
  }
  if (!w.classifier.w8) tensors.emplace_back(w.classifier.f16, int64_t{w.classifier.out} * w.classifier.in * 2);
  try {
    for (const auto& [host, bytes] : tensors) {
      if (host == nullptr || step_weights_.contains(host)) continue;
      step_weights_.emplace(host, CopyToCard(host, bytes, step_bank_));
    }
    // The W8 classifier striped over the units' weight channels, as the W2 layers are.
    if (w.classifier.w8 && !layers_.contains(reinterpret_cast<const uint8_t*>(w.classifier.w8->codes))) {
      const W8View& c8 = *w.classifier.w8;
      LayerOnCard layer;
      std::vector<uint64_t> table;  // per unit: codes, scales
      for (const Stripe& plan : PlanStripes(c8.shape, units())) {
        const xrt::kernel& k = units_[plan.unit];
        StripeBuffers st;
        st.codes = CopyToCard(c8.codes + plan.code_offset, plan.code_bytes, k.group_id(kW2A8Weights));
        st.scales = CopyToCard(c8.scales + plan.param_offset, plan.param_count * 4, k.group_id(kW2A8WeightFloats));
        table.insert(table.end(), {st.codes.address(), st.scales.address()});
        layer.stripes.push_back(std::move(st));
      }
      layer.stripe_table = CopyToCard(table.data(), static_cast<int64_t>(table.size() * sizeof(uint64_t)), step_bank_);
      layers_[reinterpret_cast<const uint8_t*>(c8.codes)] = std::move(layer);
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot place the embedding, norms and classifier on the card: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status XrtCard::RunStep(const StepPlan& plan, std::span<float> logits) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!kv_table_) return absl::InternalError("the KV cache is not on the card");
  const LlamaConfig& c = plan.weights->config;
  const int64_t n = static_cast<int64_t>(plan.tokens.size());
  const AttentionBatch& runs = *plan.attention;
  try {
    RETURN_IF_ERROR(EnsureStepWeights(*plan.weights));
    // Scratch as fpga/sim/sequenced_step.cc sizes it: the widest A8 input padded to the largest
    // group (1024), a group sum per 32 columns (the smallest group).
    const int64_t a8_cols = (std::max(c.dim, c.hidden_dim) + 1023) / 1024 * 1024;
    const auto scratch = [&](const char* name, int64_t bytes) { return Reserve(step_arrays_[name], bytes); };
    const auto table = [&](const char* name, const auto& values) {
      return Stage(step_arrays_[name], values.data(), static_cast<int64_t>(values.size() * sizeof(values[0])));
    };
    StepBuffers b;
    b.x = scratch("x", n * c.dim * 4);
    b.y = scratch("y", n * c.dim * 4);
    b.q = scratch("q", n * c.dim * 4);
    b.q_raw = scratch("q_raw", n * c.dim * 4);
    b.k = scratch("k", n * c.kv_dim() * 4);
    b.v = scratch("v", n * c.kv_dim() * 4);
    b.att = scratch("att", n * c.dim * 4);
    b.h = scratch("h", n * c.hidden_dim * 4);
    b.h2 = scratch("h2", n * c.hidden_dim * 4);
    b.queries = scratch("queries", n * c.dim * 4);
    b.sink_queries = scratch("sink_queries", n * c.dim * 4);
    b.normalized = scratch("normalized", n * c.dim * 4);
    b.logits = scratch("logits", n * c.vocab_size * 4);
    b.a8_codes = scratch("a8_codes", n * a8_cols);
    b.a8_group_sums = scratch("a8_group_sums", n * a8_cols / 32 * 4);
    b.a8_scales = scratch("a8_scales", n * 4);
    const std::vector<int32_t> tokens(plan.tokens.begin(), plan.tokens.end());
    b.tokens = table("tokens", tokens);
    b.positions = table("positions", plan.positions);
    b.kv_vectors = table("kv_vectors", plan.kv_vectors);
    b.sink_positions = table("sink_positions", plan.sink_positions);
    b.logit_rows = table("logit_rows", plan.logit_tokens);
    b.item_runs = table("item_runs", runs.item_runs);
    b.item_sink_runs = table("item_sink_runs", runs.item_sink_runs);
    b.run_start = table("run_start", runs.run_start);
    b.run_count = table("run_count", runs.run_count);
    b.kv_table = kv_table_.address();

    bool placed = true;  // every weight the program names is on the card
    const WeightAddresses weights{
        [&](const void* host) -> uint64_t {
          const auto it = step_weights_.find(host);
          placed = placed && it != step_weights_.end();
          return it == step_weights_.end() ? 0 : it->second.address();
        },
        [&](const W2View& layer) -> uint64_t {
          const auto it = layers_.find(layer.codes);
          placed = placed && it != layers_.end();
          return it == layers_.end() ? 0 : it->second.stripe_table.address();
        },
        [&](const W8View& classifier) -> uint64_t {
          const auto it = layers_.find(reinterpret_cast<const uint8_t*>(classifier.codes));
          placed = placed && it != layers_.end();
          return it == layers_.end() ? 0 : it->second.stripe_table.address();
        }};
    ASSIGN_OR_RETURN(std::vector<hls::StepDescriptor> program, BuildStepProgram(plan, b, weights, card_units()));
    if (!placed) return absl::InternalError("a weight the step reads was not uploaded to the card");
    const uint64_t program_bytes = program.size() * sizeof(hls::StepDescriptor);
    Stage(step_arrays_["program"], program.data(), static_cast<int64_t>(program_bytes));

    if (unit_runs_.empty()) StartUnits();
    xrt::run run = StartSequencer(step_arrays_["program"].bo, static_cast<int>(program.size()));
    const ert_cmd_state state = run.wait(run_timeout_);
    if (state != ERT_CMD_STATE_COMPLETED) {
      return absl::InternalError(absl::StrCat("the sequencer ended in state ", static_cast<int>(state)));
    }
    const std::size_t logit_bytes = plan.logit_tokens.size() * static_cast<std::size_t>(c.vocab_size) * sizeof(float);
    xrt::bo& out = step_arrays_["logits"].bo;
    out.sync(XCL_BO_SYNC_BO_FROM_DEVICE, logit_bytes, 0);
    std::memcpy(logits.data(), out.map<const float*>(), logit_bytes);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("card failure during a step: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace accllm::fpga
