// Loading any supported model and building the backend that runs it: what the CLI and the
// server share.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/cpu/step_plan.h"
#include "runtime/engine/backend.h"
#include "runtime/kv/attention_batch.h"
#include "runtime/kv/kv_storage.h"
#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace accllm {

struct CpuKernels;
class A8Batch;
struct W2View;

struct BackendOptions {
  std::string engine;     // reference | cpu; empty: cpu for packed models, reference otherwise
  std::string kv = "kv4"; // f32 | kv4
  bool kv4_rotation = true;  // Hadamard-rotated KV4 heads
  // Packed models' classifier on the cpu engine: w8 (8-bit, +0.06% perplexity on gutenberg30M) or
  // f16 as stored.
  std::string classifier = "w8";
  int sinks = 4;
  int window = 0;         // 0: full attention
  int threads = 0;
  bool pin_threads = false;  // cpu engine: see CpuEngineOptions::pin_threads
  int page_tokens = 16;
  int kv_pages = 0;
  int max_step_tokens = 256;
  // kv_pages is a wish, not a demand: a device with less memory for its KV cache takes what fits
  // (the server's default sizing). Otherwise a kv_pages that does not fit fails the device.
  bool kv_pages_fit_device = false;
  bool fake_a8 = false;
  bool w2_as_f32 = false;  // cpu engine, packed models: W2 layers dequantized, fp32 activations
  const CpuKernels* kernels = nullptr;  // cpu engine: null = the best this CPU runs
  std::string label = "cpu";            // cpu engine: the name it reports
  int max_attention_span = 0;           // with step_offload: most tokens one query may see
  // cpu engine: run each whole step on a device (see CpuEngineOptions::step_offload).
  std::function<absl::Status(const StepPlan&, std::span<float>)> step_offload;
  std::string xclbin;                   // fpga devices: the accelerator image
  int device_index = 0;                 // fpga devices: which card
  int sim_fault_after_steps = 0;        // fpga-sim: fail like a faulted card after this many steps (0: never)
};

// An fp32 model (llama2.c or Hugging Face) or a packed W2A8KV4 model.
struct AnyModel {
  std::string path;
  std::unique_ptr<Model> fp32;
  std::unique_ptr<PackedModel> packed;
  const LlamaConfig& config() const { return packed ? packed->config : fp32->config; }
};

absl::StatusOr<AnyModel> LoadAnyModel(const std::string& path, LoadMode mode);

// `path` if set, else the tokenizer found beside the model.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const AnyModel& model, const std::string& path);

// The attention the options ask for: Λ with `sinks` and `window`, or full when window is 0.
LambdaConfig LambdaFor(const BackendOptions& options);

// The backend for `model` (which must outlive it).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& options, const AnyModel& model);

}  // namespace accllm
