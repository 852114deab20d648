#include "fpga/host/xrt_card.h"

#include <experimental/xrt_system.h>
#include <experimental/xrt_xclbin.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "absl/strings/str_cat.h"
#include "fpga/host/kernel_signatures.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/w2a8_engine.h"

namespace accllm::fpga {
namespace {

constexpr const char* kW2A8 = "accllm_w2a8";
constexpr const char* kAttention = "accllm_kv4_attention";

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
                                                                     : nullptr;
      if (units == nullptr) continue;
      for (const xrt::xclbin::ip& cu : k.get_cus()) {
        const std::string name = cu.get_name();  // "accllm_w2a8:accllm_w2a8_3"
        const std::string instance = name.substr(name.find(':') + 1);
        units->emplace_back(card->device_, uuid, absl::StrCat(k.get_name(), ":{", instance, "}"));
      }
    }
    card->attention_buffers_.resize(card->attention_units_.size());
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot load '", xclbin_path, "' on card ", index, ": ", e.what()));
  }
  if (card->units_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("'", xclbin_path, "' has no ", kW2A8, " compute units"));
  }
  return card;
}

absl::Status XrtCard::Upload(const W2View& w) {
  std::lock_guard<std::mutex> lock(mutex_);
  const W2Shape& s = w.shape;
  std::vector<StripeBuffers> stripes;
  try {
    for (const Stripe& plan : PlanStripes(s, units())) {
      StripeBuffers st;
      st.plan = plan;
      const xrt::kernel& k = units_[plan.unit];
      st.codes = Buffer(device_, plan.code_bytes, k.group_id(kW2A8Codes));
      st.index = Buffer(device_, s.sparse24 ? plan.code_bytes : 0, k.group_id(kW2A8SparseIndex));
      st.scales = Buffer(device_, plan.param_count * 2, k.group_id(kW2A8Scales));
      st.zeros = Buffer(device_, plan.param_count, k.group_id(kW2A8Zeros));
      st.codes.write(w.codes + plan.code_offset, plan.code_bytes, 0);
      if (s.sparse24) st.index.write(w.sparse_index + plan.code_offset, plan.code_bytes, 0);
      st.scales.write(w.scales + plan.param_offset, plan.param_count * 2, 0);
      st.zeros.write(w.zeros + plan.param_offset, plan.param_count, 0);
      for (xrt::bo* bo : {&st.codes, &st.index, &st.scales, &st.zeros}) bo->sync(XCL_BO_SYNC_BO_TO_DEVICE);
      stripes.push_back(std::move(st));
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot place a ", s.rows, "x", s.cols, " layer on the card: ", e.what()));
  }
  layers_[w.codes] = std::move(stripes);
  return absl::OkStatus();
}

// Room for one call's tokens (at most T) of the widest layer seen so far.
absl::Status XrtCard::EnsureActivationBuffers(const A8Batch& x) {
  constexpr int64_t kTokens = hls::kW2A8TokenLanes;
  const int64_t bytes = kTokens * x.cols_padded();
  if (bytes <= activation_bytes_) return absl::OkStatus();
  const xrt::kernel& k = units_[0];  // every unit shares the activation bank (fpga/build/u280.cfg)
  activations_ = Buffer(device_, bytes, k.group_id(kW2A8Activations));
  group_sums_ = Buffer(device_, kTokens * (x.cols_padded() / x.group_size()) * 4, k.group_id(kW2A8GroupSums));
  act_scales_ = Buffer(device_, kTokens * 4, k.group_id(kW2A8ActScales));
  activation_bytes_ = bytes;
  return absl::OkStatus();
}

absl::Status XrtCard::MatMul(const W2View& w, const A8Batch& x, float* y, int64_t ldy) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto layer = layers_.find(w.codes);
  if (layer == layers_.end()) return absl::InternalError("a layer was not uploaded to the card");
  const W2Shape& s = w.shape;
  const int groups = s.cols_padded() / s.group_size;
  try {
    if (absl::Status st = EnsureActivationBuffers(x); !st.ok()) return st;
    // The engine takes at most T tokens per call (each weight beat meets all of them): a step of
    // more runs as several calls, each reading the layer's weights once.
    for (int t0 = 0; t0 < x.tokens(); t0 += hls::kW2A8TokenLanes) {
      const int tokens = std::min(hls::kW2A8TokenLanes, x.tokens() - t0);
      const auto stage = [](xrt::bo& bo, const void* from, int64_t bytes) {
        bo.write(from, bytes, 0);
        bo.sync(XCL_BO_SYNC_BO_TO_DEVICE, bytes, 0);
      };
      stage(activations_, x.codes(t0), int64_t{tokens} * x.cols_padded());
      stage(group_sums_, x.group_sums(t0), int64_t{tokens} * groups * 4);
      stage(act_scales_, x.scales() + t0, int64_t{tokens} * 4);

      std::vector<xrt::run> runs;
      for (StripeBuffers& st : layer->second) {
        const int rows = st.plan.rows;
        if (st.out_bytes < int64_t{tokens} * rows * 4) {
          st.out_bytes = int64_t{hls::kW2A8TokenLanes} * rows * 4;
          st.out = Buffer(device_, st.out_bytes, units_[st.plan.unit].group_id(kW2A8Out));
        }
        // The stripe's buffers start at its first tile: the unit sees tiles [0, count) of `rows` rows.
        runs.push_back(units_[st.plan.unit](st.codes, st.index, st.scales, st.zeros, activations_, group_sums_,
                                            act_scales_, st.out, rows, s.cols_padded(), s.group_size,
                                            s.sparse24 ? 1 : 0, tokens, rows, 0, st.plan.tile_end - st.plan.tile_begin));
      }
      for (std::size_t i = 0; i < runs.size(); ++i) {
        const ert_cmd_state state = runs[i].wait(run_timeout_);
        if (state != ERT_CMD_STATE_COMPLETED) {
          return absl::InternalError(
              absl::StrCat("W2A8 unit ", layer->second[i].plan.unit, " ended in state ", static_cast<int>(state)));
        }
      }
      for (StripeBuffers& st : layer->second) {
        const int rows = st.plan.rows;
        st.out.sync(XCL_BO_SYNC_BO_FROM_DEVICE, int64_t{tokens} * rows * 4, 0);
        const float* out = st.out.map<const float*>();
        for (int t = 0; t < tokens; ++t) {
          std::memcpy(y + (t0 + t) * ldy + st.plan.row0, out + int64_t{t} * rows, rows * sizeof(float));
        }
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("card failure during a W2A8 step: ", e.what()));
  }
  return absl::OkStatus();
}

std::byte* XrtCard::AllocateKv(KvRegion region, int64_t bytes) {
  if (attention_units_.empty()) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  const bool values = region == KvRegion::kValueCodes || region == KvRegion::kValueParams;
  const int bank = attention_units_[0].group_id(values ? kAttnValueCodes : kAttnKeyCodes);
  try {
    xrt::bo& bo = kv_[static_cast<int>(region)];
    bo = Buffer(device_, bytes, bank);
    auto* host = bo.map<std::byte*>();
    std::memset(host, 0, static_cast<std::size_t>(bytes));
    return host;
  } catch (const std::exception&) {
    return nullptr;
  }
}

void XrtCard::EnsureAttentionBuffers(AttentionBuffers& b, int items, int runs, int head_size, int bank) {
  if (items > b.item_capacity || head_size > b.head_size) {
    b.item_capacity = std::max<int64_t>(items, 2 * b.item_capacity);
    b.head_size = std::max<int64_t>(head_size, b.head_size);
    const int64_t vectors = b.item_capacity * b.head_size * 4;
    b.q = Buffer(device_, vectors, bank);
    b.q_sink = Buffer(device_, vectors, bank);
    b.out = Buffer(device_, vectors, bank);
    b.item_runs = Buffer(device_, (b.item_capacity + 1) * 4, bank);
    b.item_sink_runs = Buffer(device_, b.item_capacity * 4, bank);
  }
  if (runs > b.run_capacity) {
    b.run_capacity = std::max<int64_t>(runs, 2 * b.run_capacity);
    b.run_start = Buffer(device_, b.run_capacity * 4, bank);
    b.run_count = Buffer(device_, b.run_capacity * 4, bank);
  }
}

absl::Status XrtCard::Attention(const AttentionBatch& batch, float* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (attention_units_.empty() || !kv_[0]) return absl::InternalError("the KV cache is not on the card");
  const int hs = batch.head_size;
  try {
    // The vectors this step wrote, from the host mapping to HBM.
    for (const auto& [first, count] : batch.written_spans) {
      for (int r = 0; r < 4; ++r) {
        const bool params = r == static_cast<int>(KvRegion::kKeyParams) || r == static_cast<int>(KvRegion::kValueParams);
        const int64_t vector_bytes = params ? int64_t{sizeof(Kv4Params)} : hs / 2;
        kv_[r].sync(XCL_BO_SYNC_BO_TO_DEVICE, count * vector_bytes, first * vector_bytes);
      }
    }
    // Items split evenly between the units in whole groups of the unit's query lanes (a unit
    // interleaves a group's queries); each unit gets its share of the arrays, its run offsets
    // rebased to its first run.
    const int lanes = hls::kAttentionQueryLanes;
    const int groups = std::max(1, (batch.items + lanes - 1) / lanes);
    const int units = std::min<int>(attention_units(), groups);
    std::vector<xrt::run> runs;
    std::vector<std::pair<int, int>> shares;
    for (int u = 0; u < units; ++u) {
      const int begin = std::min(batch.items, static_cast<int>(int64_t{groups} * u / units) * lanes);
      const int end = std::min(batch.items, static_cast<int>(int64_t{groups} * (u + 1) / units) * lanes);
      const int first_run = batch.item_runs[begin], run_total = batch.item_runs[end] - first_run;
      xrt::kernel& unit = attention_units_[u];
      AttentionBuffers& b = attention_buffers_[u];
      EnsureAttentionBuffers(b, end - begin, std::max(1, run_total), hs, unit.group_id(kAttnQ));
      std::vector<int32_t> item_runs(batch.item_runs.begin() + begin, batch.item_runs.begin() + end + 1);
      for (int32_t& r : item_runs) r -= first_run;
      const int64_t vector_bytes = int64_t{end - begin} * hs * 4;
      b.q.write(batch.q.data() + int64_t{begin} * hs, vector_bytes, 0);
      b.q_sink.write(batch.q_sink.data() + int64_t{begin} * hs, vector_bytes, 0);
      b.item_runs.write(item_runs.data(), item_runs.size() * 4, 0);
      b.item_sink_runs.write(batch.item_sink_runs.data() + begin, int64_t{end - begin} * 4, 0);
      b.run_start.write(batch.run_start.data() + first_run, int64_t{run_total} * 4, 0);
      b.run_count.write(batch.run_count.data() + first_run, int64_t{run_total} * 4, 0);
      for (xrt::bo* bo : {&b.q, &b.q_sink, &b.item_runs, &b.item_sink_runs, &b.run_start, &b.run_count}) {
        bo->sync(XCL_BO_SYNC_BO_TO_DEVICE);
      }
      runs.push_back(unit(b.q, b.q_sink, b.item_runs, b.item_sink_runs, end - begin, kv_[0], kv_[1], kv_[2], kv_[3],
                          b.run_start, b.run_count, hs, b.out));
      shares.emplace_back(begin, end);
    }
    for (int u = 0; u < units; ++u) {
      const ert_cmd_state state = runs[u].wait(run_timeout_);
      if (state != ERT_CMD_STATE_COMPLETED) {
        return absl::InternalError(absl::StrCat("attention unit ", u, " ended in state ", static_cast<int>(state)));
      }
      const auto [begin, end] = shares[u];
      AttentionBuffers& b = attention_buffers_[u];
      const int64_t bytes = int64_t{end - begin} * hs * 4;
      b.out.sync(XCL_BO_SYNC_BO_FROM_DEVICE, bytes, 0);
      std::memcpy(out + int64_t{begin} * hs, b.out.map<const float*>(), bytes);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("card failure during attention: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace accllm::fpga
