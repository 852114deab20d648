#include "fpga/step_program.h"

#include <climits>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace accllm::fpga {
namespace {

using hls::StepDescriptor;
using hls::StepOp;

constexpr int kHadamardUnitMax = 256;  // widest vector accllm_hadamard rotates
constexpr int kSwiGluSegment = 512;    // as the CPU engine cuts a token's hidden vector without FFN Hadamard

class ProgramBuilder {
 public:
  ProgramBuilder(const StepPlan& plan, const StepBuffers& b, const WeightAddresses& addresses, CardUnits units)
      : plan_(plan), w_(*plan.weights), c_(w_.config), b_(b), address_(addresses.of), stripe_table_(addresses.stripe_table),
        w8_stripe_table_(addresses.w8_stripe_table), units_(units),
        n_(static_cast<int>(plan.tokens.size())) {}

  absl::StatusOr<std::vector<StepDescriptor>> Build() {
    RETURN_IF_ERROR(Check());
    const int kv_dim = c_.kv_dim(), hs = c_.head_size();
    StepDescriptor embed = Op(StepOp::kEmbed, n_);
    embed.n[0] = c_.dim;
    embed.p[0] = address_(w_.embedding_f16);
    embed.p[1] = b_.tokens;
    embed.p[2] = b_.x;
    program_.push_back(embed);
    for (int l = 0; l < c_.n_layers; ++l) {
      const EngineLayer& w = w_.layers[l];
      NormLinears(w.rms_att, /*add_residual=*/l > 0, {{&w.wq, b_.q, c_.dim}, {&w.wk, b_.k, kv_dim}, {&w.wv, b_.v, kv_dim}});
      const int64_t layer_vectors = plan_.layer_vectors * l;
      StepDescriptor rope = Op(StepOp::kRopeKvWrite, n_);
      rope.n[0] = c_.dim;
      rope.n[1] = c_.n_kv_heads;
      rope.n[2] = hs;
      rope.n[3] = static_cast<int32_t>(layer_vectors);
      rope.n[4] = plan_.rotate_kv ? 1 : 0;
      rope.f = c_.rope_theta;
      rope.p[0] = b_.q;
      rope.p[1] = b_.q_raw;
      rope.p[2] = b_.k;
      rope.p[3] = b_.v;
      rope.p[4] = b_.positions;
      rope.p[5] = b_.kv_vectors;
      rope.p[6] = b_.kv_table;
      program_.push_back(rope);

      StepDescriptor attention = Op(StepOp::kAttention, n_);
      attention.n[0] = c_.n_heads;
      attention.n[1] = hs;
      attention.n[2] = plan_.rotate_kv ? 1 : 0;
      attention.n[3] = static_cast<int32_t>(plan_.attention->run_start.size());
      attention.n[4] = static_cast<int32_t>(layer_vectors);
      attention.n[5] = units_.attention;
      attention.f = c_.rope_theta;
      attention.p[0] = b_.q;
      attention.p[1] = b_.q_raw;
      attention.p[2] = b_.sink_positions;
      attention.p[3] = b_.item_runs;
      attention.p[4] = b_.item_sink_runs;
      attention.p[5] = b_.run_start;
      attention.p[6] = b_.run_count;
      attention.p[7] = b_.kv_table;
      attention.p[11] = b_.queries;
      attention.p[12] = b_.sink_queries;
      attention.p[13] = b_.att;
      program_.push_back(attention);

      QuantizedLinears(b_.att, c_.dim, {{&w.wo, b_.y, c_.dim}});
      NormLinears(w.rms_ffn, /*add_residual=*/true, {{&w.w1, b_.h, c_.hidden_dim}, {&w.w3, b_.h2, c_.hidden_dim}});
      StepDescriptor swiglu = Op(StepOp::kSwiGlu, n_);
      swiglu.n[0] = c_.hidden_dim;
      swiglu.n[1] = c_.ffn_hadamard_block > 0 ? c_.ffn_hadamard_block : kSwiGluSegment;
      swiglu.n[2] = c_.ffn_hadamard_block;
      swiglu.p[0] = b_.h;
      swiglu.p[1] = b_.h2;
      program_.push_back(swiglu);
      QuantizedLinears(b_.h, c_.hidden_dim, {{&w.w2, b_.y, c_.dim}});
    }
    Classifier();
    return std::move(program_);
  }

 private:
  struct Output {
    const LinearWeights* w;
    uint64_t y;
    int ldy;
  };

  absl::Status Check() const {
    if (w_.embedding_f16 == nullptr) return absl::InvalidArgumentError("the sequencer reads an fp16 embedding table");
    for (const EngineLayer& layer : w_.layers) {
      for (const LinearWeights* w : {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w1, &layer.w2, &layer.w3}) {
        if (!w->w2) return absl::InvalidArgumentError("the sequencer runs W2 linear layers only");
      }
    }
    if (!w_.classifier.w8 && w_.classifier.f16 == nullptr) {
      return absl::InvalidArgumentError("the sequencer runs a W8 or fp16 classifier");
    }
    if (c_.ffn_hadamard_block > kHadamardUnitMax) {
      return absl::InvalidArgumentError(absl::StrCat("an FFN Hadamard block of ", c_.ffn_hadamard_block,
                                                     " is wider than the Hadamard unit's ", kHadamardUnitMax));
    }
    if (plan_.layer_vectors * c_.n_layers > INT32_MAX) {
      return absl::InvalidArgumentError("the KV cache has more vectors than the sequencer numbers");
    }
    if (c_.n_kv_heads > hls::kMaxKvHeads) {
      return absl::InvalidArgumentError(absl::StrCat(c_.n_kv_heads, " KV heads are more than the KV4 write unit's ",
                                                     hls::kMaxKvHeads));
    }
    if (plan_.rotate_kv && c_.head_size() > kHadamardUnitMax) {
      return absl::InvalidArgumentError("the head size is wider than the Hadamard unit");
    }
    return absl::OkStatus();
  }

  static StepDescriptor Op(StepOp op, int tokens) {
    StepDescriptor d;
    d.op = op;
    d.tokens = tokens;
    return d;
  }

  // A8 of the norm of x (after x += y when add_residual), then each linear; the A8 codes are made
  // again for a linear whose input shape differs from the one before (the residual added once).
  void NormLinears(const float* weight, bool add_residual, std::initializer_list<Output> outputs) {
    const W2Shape* quantized = nullptr;
    for (const Output& o : outputs) {
      const W2Shape& s = o.w->w2->shape;
      if (quantized == nullptr || s.cols_padded() != quantized->cols_padded() || s.group_size != quantized->group_size) {
        StepDescriptor norm = Op(StepOp::kResidualNormA8, n_);
        SetNorm(norm, weight, add_residual && quantized == nullptr, s.cols_padded(), s.group_size);
        program_.push_back(norm);
        quantized = &s;
      }
      W2A8(o);
    }
  }

  void SetNorm(StepDescriptor& d, const float* weight, bool add_residual, int cols_padded, int group_size) const {
    d.n[0] = c_.dim;
    d.n[1] = cols_padded;
    d.n[2] = group_size;
    d.f = c_.norm_eps;
    d.p[0] = b_.x;
    d.p[1] = add_residual ? b_.y : 0;
    d.p[2] = address_(weight);
    d.p[3] = b_.a8_codes;
    d.p[4] = b_.a8_group_sums;
    d.p[5] = b_.a8_scales;
  }

  void QuantizedLinears(uint64_t x, int width, std::initializer_list<Output> outputs) {
    const W2Shape* quantized = nullptr;
    for (const Output& o : outputs) {
      const W2Shape& s = o.w->w2->shape;
      if (quantized == nullptr || s.cols_padded() != quantized->cols_padded() || s.group_size != quantized->group_size) {
        StepDescriptor a8 = Op(StepOp::kA8, n_);
        a8.n[0] = width;
        a8.n[1] = s.cols_padded();
        a8.n[2] = s.group_size;
        a8.p[0] = x;
        a8.p[1] = b_.a8_codes;
        a8.p[2] = b_.a8_group_sums;
        a8.p[3] = b_.a8_scales;
        program_.push_back(a8);
        quantized = &s;
      }
      W2A8(o);
    }
  }

  void W2A8(const Output& o) {
    const W2View& w = *o.w->w2;
    StepDescriptor d = Op(StepOp::kW2A8, n_);
    d.n[0] = w.shape.rows;
    d.n[1] = w.shape.cols_padded();
    d.n[2] = w.shape.group_size;
    d.n[3] = w.shape.sparse24 ? 1 : 0;
    d.n[4] = o.ldy;
    d.n[5] = units_.w2a8;
    d.p[0] = stripe_table_(w);
    d.p[1] = b_.a8_codes;
    d.p[2] = b_.a8_group_sums;
    d.p[3] = b_.a8_scales;
    d.p[4] = o.y;
    program_.push_back(d);
  }

  // The last layer's residual and the final norm, on the rows whose logits are wanted only.
  void Classifier() {
    const int rows = static_cast<int>(plan_.logit_tokens.size());
    for (uint64_t x : {b_.x, b_.y}) {
      StepDescriptor gather = Op(StepOp::kGatherRows, rows);
      gather.n[0] = c_.dim;
      gather.p[0] = x;
      gather.p[1] = b_.logit_rows;
      program_.push_back(gather);
    }
    const LinearWeights& head = w_.classifier;
    StepDescriptor norm = Op(StepOp::kResidualNormA8, rows);
    if (head.w8) {
      const W8View& w = *head.w8;
      SetNorm(norm, w_.rms_final, /*add_residual=*/true, w.shape.cols_padded(), w.shape.group_size);
      program_.push_back(norm);
      StepDescriptor d = Op(StepOp::kW8A8, rows);
      d.n[0] = w.shape.rows;
      d.n[1] = w.shape.cols_padded();
      d.n[2] = w.shape.group_size;
      d.n[3] = c_.vocab_size;
      d.n[4] = units_.w2a8;
      d.p[0] = w8_stripe_table_(w);
      d.p[1] = b_.a8_codes;
      d.p[2] = b_.a8_scales;
      d.p[3] = b_.logits;
      program_.push_back(d);
      return;
    }
    SetNorm(norm, w_.rms_final, /*add_residual=*/true, 0, 0);
    norm.p[6] = b_.normalized;
    program_.push_back(norm);
    StepDescriptor d = Op(StepOp::kF16, rows);
    d.n[0] = head.out;
    d.n[1] = head.in;
    d.n[2] = c_.vocab_size;
    d.p[0] = address_(head.f16);
    d.p[1] = b_.normalized;
    d.p[2] = b_.logits;
    program_.push_back(d);
  }

  const StepPlan& plan_;
  const EngineWeights& w_;
  const LlamaConfig& c_;
  const StepBuffers& b_;
  const std::function<uint64_t(const void*)>& address_;
  const std::function<uint64_t(const W2View&)>& stripe_table_;
  const std::function<uint64_t(const W8View&)>& w8_stripe_table_;
  const CardUnits units_;
  const int n_;
  std::vector<StepDescriptor> program_;
};

}  // namespace

absl::StatusOr<std::vector<hls::StepDescriptor>> BuildStepProgram(const StepPlan& plan, const StepBuffers& buffers,
                                                                  const WeightAddresses& weights, CardUnits units) {
  return ProgramBuilder(plan, buffers, weights, units).Build();
}

hls::StepDescriptor StopDescriptor(CardUnits units) {
  hls::StepDescriptor d;
  d.op = hls::StepOp::kStop;
  d.n[0] = units.w2a8;
  d.n[1] = units.attention;
  return d;
}

}  // namespace accllm::fpga
