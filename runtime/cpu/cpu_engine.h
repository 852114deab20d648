// The CPU engine: a Backend that runs W2A8 (or fp16/fp32) weights with a paged fp32 or KV4
// cache and Λ-shaped attention, on a persistent thread pool with kernels chosen by CPU features.
//
// One Step processes any mix of sequences and token counts: a prefill chunk is one sequence with
// many tokens, a decode step many sequences with one token each. Per layer, every token goes
// through the linear layers together (one weight pass for the whole batch); attention runs per
// (token, head) over that token's own sequence pages.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <tuple>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/common/nn_ops.h"
#include "runtime/cpu/cpu_attention.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/step_profile.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/engine_weights.h"
#include "runtime/kv/attention_batch.h"
#include "runtime/cpu/step_plan.h"
#include "runtime/kv/kv_storage.h"
#include "runtime/reference/forward.h"

namespace accllm {

struct CpuEngineOptions {
  LambdaConfig lambda;                          // default: full attention
  KvPrecision kv_precision = KvPrecision::kKv4;
  // KV4: store keys and values Hadamard-rotated per head (runtime/common/hadamard.h). Used when
  // the head size is a power of two.
  bool kv4_rotation = true;
  int page_tokens = 16;
  int kv_pages = 0;          // 0: enough for one sequence of the model's full trained context
  int max_step_tokens = 256;
  int max_attention_span = 0;  // reported by max_attention_span(): the step offload's limit
  int threads = 0;           // 0: one per hardware thread
  bool pin_threads = false;  // each thread on its own CPU, one per physical core first (cpu_placement.h)
  // Round-trip the inputs of fp32 linear layers through A8 (to measure A8's effect on quality
  // with fp32 weights). W2 layers always take A8 inputs.
  bool fake_quantize_activations = false;
  // Measurement only (accllm eval): with an fp32 cache, simulate KIVI's KV4 format in groups of
  // this many tokens (runtime/kv/kivi_simulation.h). 0: off.
  int kivi_group = 0;
  bool kivi_exact_open_group = true;  // false: the open group stored per token in KV4
  // Serve an fp16 classifier (packed models) as W8 (8-bit rows, one scale per 128 inputs) on
  // the integer kernels, quantized when the engine is created. fp32 classifiers stay as they are.
  bool w8_classifier = false;
  // The kernel table; null: the best this CPU runs (SelectedKernels). A simulated accelerator
  // supplies its own (fpga/sim).
  const CpuKernels* kernels = nullptr;
  std::string label = "cpu";  // how name() introduces the engine
  // When set, sees the input of every linear layer (once for q/k/v, once for gate/up) of every
  // step: x[t * ld + j] for the step's tokens. Calibration collects its statistics here.
  std::function<void(int layer, ForwardObserver::Input input, const float* x, int tokens, int64_t ld)>
      observe_linear_input;
  // When set, fp32 linear layers (unquantized models) in steps of at least
  // f32_gemm_min_tokens tokens run here instead of on the kernel table: y[t * ldy + r] =
  // sum_j w[r * cols + j] x[t * ldx + j]. A BLAS sgemm (calibration, perplexity) packs the weights
  // into its cache blocks and runs about twice the kernel table's matrix-vector-shaped product.
  // Called from the stepping thread with the pool idle; it brings its own threads.
  std::function<void(const float* w, int rows, int cols, const float* x, int tokens, int64_t ldx, float* y, int64_t ldy)>
      f32_gemm;
  int f32_gemm_min_tokens = 32;
  // When set, every step runs here whole (a device with a layer sequencer), after the engine has
  // checked it, reserved its pages and planned its attention; it writes the logits the step
  // returns. The device keeps the KV cache (the engine only numbers its vectors). An error fails
  // the step.
  std::function<absl::Status(const StepPlan&, std::span<float> logits)> step_offload;
};

class CpuEngine final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Create(EngineWeights weights,
                                                           const CpuEngineOptions& options);

  std::string name() const override;
  const LlamaConfig& config() const override { return weights_.config; }
  const LambdaConfig& lambda() const override { return options_.lambda; }
  int page_tokens() const override { return options_.page_tokens; }
  PagePool& page_pool() override { return pool_; }
  int max_step_tokens() const override { return options_.max_step_tokens; }
  int max_attention_span() const override { return options_.max_attention_span; }

  absl::Status Prefill(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) override;
  absl::Status Decode(std::span<SequenceKv* const> seqs, std::span<const int> tokens,
                      std::span<float> logits) override;
  absl::Status PrefillEveryLogit(SequenceKv& seq, std::span<const int> tokens, std::span<float> logits) override;

  // Adds each step's time by stage into *profile from now on (null: stop).
  void set_profile(StepProfile* profile) {
    profile_ = profile;
    pool_threads_.set_loop_stats(profile != nullptr ? &profile->loops : nullptr);
  }

  const CpuKernels& kernels() const { return *kernels_; }
  int threads() const { return pool_threads_.threads(); }
  int64_t kv_bytes() const { return kv_.total_bytes(); }

 private:
  // Which of the engine's A8 buffers holds a linear-layer input's quantized form.
  enum InputSlot { kAttentionInput, kAttentionOutput, kFfnInput, kFfnDownInput, kClassifierInput };
  // A batch of activations that several linear layers read; quantized to A8 at most once.
  struct LinearInput {
    const float* x;
    int n;
    int64_t ld;
    InputSlot slot;
    const A8Batch* quantized_into = nullptr;  // the buffer that holds it quantized, once one does
  };
  // One linear layer's weights and where its outputs go: y[t * ldy + r].
  struct LinearOutput {
    const LinearWeights* w;
    float* y;
    int64_t ldy;
  };
  struct Entry {  // one sequence's tokens in a step
    SequenceKv* seq;
    std::span<const int> tokens;
  };

  CpuEngine(EngineWeights weights, const CpuEngineOptions& options, const CpuKernels& kernels);

  // Logits for each entry's last token, or (every_token) for every token of the step.
  absl::Status Step(std::span<const Entry> entries, std::span<float> logits, bool every_token);
  void Linear(const LinearWeights& w, LinearInput& in, float* y, int64_t ldy);
  // Several layers that read the same input (q/k/v, gate/up): W2 layers run as one parallel loop
  // over all their row tiles, so the threads meet once instead of once per layer.
  void Linears(std::span<const LinearOutput> outputs, LinearInput& in);
  // The quantized form of `in` for a W2 layer of shape s, made on first use.
  const A8Batch& QuantizedInput(int cols_padded, int group_size, int in_features, LinearInput& in);
  // The A8 buffer for `slot` at a shape, holding room for the step's tokens.
  A8Batch& A8Buffer(InputSlot slot, int cols_padded, int group_size);
  // For a loop that makes a linear input token by token: the buffer `w` will read for `slot`,
  // sized to n tokens, so that the loop quantizes each token as it finishes it (one parallel loop
  // less), and `in` says it is done. Null when `w` is not W2, or when something reads or changes
  // the input in between (fake A8, observers): then the layer quantizes it on first use.
  A8Batch* QuantizeWhereMade(const LinearWeights& w, LinearInput& in);
  // x += xb (the residual branch's output) when `add_residual`, then xb = RMSNorm(x) * weight
  // (and, with `a8`, xb quantized into it); token by token, in one parallel loop.
  void ResidualThenNorm(int n, bool add_residual, const float* weight, A8Batch* a8 = nullptr);
  // The page runs each token sees (the same in every layer), once per step.
  void PlanPageRuns(int n);
  // The attention batch of `layer` for n tokens: each query's runs counted (the same page runs in
  // every layer), the spans the step writes, room for runs and queries. Then, per (token, KV
  // head), from the parallel loop that also writes the cache:
  void PrepareAttention(int layer, int n);
  // the page runs of token t's query heads that read KV head kv_head;
  void FillAttentionRuns(int t, int kv_head);
  // those query heads through RoPE, into the batch in the cache's basis (and their sink queries,
  // from before RoPE).
  void RopeQueries(int t, int kv_head);
  // Token t's key and value for KV head kv_head through RoPE (and rotation) into the cache, and its
  // query heads with their page runs into the prepared batch.
  void RopeAndWriteKv(int t, int kv_head);
  // The prepared batch's attention into att_ (quantized into `a8` if given).
  void Attention(int n, A8Batch* a8);
  // RopeAndWriteKv and attention in one parallel loop over (token, KV head), for a step whose
  // sequences have one token each.
  void RopeWriteAndAttend(int n, A8Batch* a8);
  // The step on step_offload: the plan from the tokens' positions and page runs.
  absl::Status OffloadStep(std::span<const Entry> entries, int n, std::span<float> logits, bool every_token);
  // After a step that succeeded: the sequences advance past its tokens, and pages that left the
  // window go back to the pool.
  void EndStep(std::span<const Entry> entries);
  // After a layer's attention: the KIVI round trip of every group the step completed.
  void RoundTripCompletedKiviGroups(int layer, int n);
  // fn(t) for every token t < n, spread over the thread pool.
  void PerToken(int n, const std::function<void(int)>& fn);

  EngineWeights weights_;
  CpuEngineOptions options_;
  StepProfile* profile_ = nullptr;
  StageClock stage_clock_{nullptr};  // the current step's, when profiling
  bool rotate_kv_ = false;       // KV4 with Hadamard-rotated heads
  const CpuKernels* kernels_;
  ThreadPool pool_threads_;
  PagePool pool_;
  KvStorage kv_;

  // Scratch for up to max_step_tokens tokens, row-major [token][feature].
  std::vector<float> x_, xb_, q_, k_, v_, att_, hb_, hb2_;
  std::vector<int64_t> positions_;
  std::vector<RopeAngles> rope_;  // per token, computed once per step
  std::vector<SequenceKv*> token_seq_;
  struct PageRun {
    int page, slot, count;
  };
  std::vector<std::vector<PageRun>> token_runs_;  // per token: sink runs, then window runs
  std::vector<int> token_sink_runs_;
  std::vector<int> written_pages_;  // pages the current step writes
  std::unique_ptr<std::atomic<int>[]> kv_heads_done_;  // per token, in RopeWriteAndAttend
  AttentionBatch attention_;
  SharedKeyPlan shared_keys_;  // made at layer 0, for every layer of the step
  // Items per block of shared keys: large enough that a block's keys are made floats for many
  // queries, small enough that a prefill step has blocks for every thread.
  static constexpr int kSharedKeyBlock = 64;
  // Quantized activations by (input slot, padded width, group size).
  std::map<std::tuple<int, int, int>, std::unique_ptr<A8Batch>> a8_;
};

}  // namespace accllm
