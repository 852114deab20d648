// The layer sequencer's descriptor list for a step of a model shape, without a model: the same
// BuildStepProgram (fpga/step_program.h) the devices run, over weights that have shapes and no
// data (every address 0). The performance model counts what each descriptor costs from it, so the
// step it models is the step the code runs.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "fpga/kernels/step_descriptor.h"
#include "runtime/model/llama_config.h"

namespace accllm::fpga {

struct StepShape {
  LlamaConfig config;
  int group_size = 128;        // every W2 layer's
  bool w8_classifier = false;  // else fp16
  bool rotate_kv = true;       // KV4 heads stored Hadamard-rotated (the engine's default)
  int tokens = 1;              // in the step
  int logit_rows = 1;          // tokens whose logits it returns
  int w2a8_units = 24;         // the card's unit chains
  int attention_units = 2;
};

absl::StatusOr<std::vector<hls::StepDescriptor>> ShapeOnlyProgram(const StepShape& shape);

}  // namespace accllm::fpga
