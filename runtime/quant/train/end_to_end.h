// End-to-end training of a quantized model's group scales (EfficientQAT's E2E-QP), distilled from
// the fp32 model: every code, zero point and norm stays; the scales of all layers are trained
// together by Adam to lower the KL divergence from the fp32 model's next-token distributions to
// the quantized model's, at every position of the calibration sequences. Block-wise
// reconstruction matches each layer's output; this matches what the layers add up to. If the
// trained scales (rounded to fp16) do no better over the calibration sequences, the ones given
// stay.
//
// Cost per epoch: one forward and backward pass of the whole model per calibration sequence,
// about as much as one epoch of block-wise reconstruction over all layers.
#pragma once

#include <span>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/model.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/train/adam.h"

namespace accllm {

struct EndToEndOptions {
  int epochs = 1;
  int batch_sequences = 4;  // sequences per Adam step
  float scale_lr = 1e-5f;
  LrSchedule schedule = LrSchedule::kCosine;
  uint64_t seed = 1;  // the order sequences are visited in
  int threads = 0;    // matrix-product threads; 0: one per hardware thread
};

struct EndToEndReport {
  // Mean KL divergence per position (nats), over the calibration sequences.
  double kl_before = 0, kl_after = 0;
  std::vector<double> epoch_kl;  // the mean over each epoch's steps, as trained
  bool kept_original = false;
  double seconds = 0;
};

// Refines the group scales of `packed`, a quantized form of `teacher` (same configuration; it may
// be rotated: only the teacher's logits are used), in place. `sequences` are token ids, each
// starting at position 0.
absl::Status TrainScalesEndToEnd(const Model& teacher, std::span<const std::vector<int>> sequences,
                                 const EndToEndOptions& options, PackedContents& packed, EndToEndReport* report = nullptr);

}  // namespace accllm
