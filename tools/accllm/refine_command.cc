// accllm refine: train the group scales of a packed file end to end against its fp32 model
// (the last stage of `accllm quantize`, on a file it already wrote).
#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/model/load_model.h"
#include "runtime/model/packed_model.h"
#include "runtime/quant/train/end_to_end.h"
#include "tools/accllm/calibration_text.h"
#include "tools/accllm/commands.h"
#include "tools/accllm/end_to_end_report.h"
#include "tools/accllm/heap_reuse.h"

namespace accllm::cli {

void PrintEndToEndReport(const EndToEndReport& r) {
  std::fprintf(stderr, "KL from the fp32 model per position: %.5f -> %.5f nats in %.1f s (epochs:", r.kl_before, r.kl_after,
               r.seconds);
  for (double e : r.epoch_kl) std::fprintf(stderr, " %.5f", e);
  std::fprintf(stderr, ")%s\n", r.kept_original ? "  no better: scales kept as they were" : "");
}

namespace {

struct RefineFlags {
  std::string model;
  std::string quantized;
  std::string tokenizer;
  std::string output;
  std::string calibration = "../shared/data/gutenberg-calib.txt";
  std::string calibration_lines = "0:";
  EndToEndOptions options;
};

int RunRefine(const RefineFlags& flags) {
  ReuseFreedMemory();
  const std::string model_path = ResolveModelPath(flags.model);
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(model_path);
  if (!model.ok()) return ReportError(model.status());
  absl::StatusOr<PackedContents> packed = ReadPackedContents(flags.quantized);
  if (!packed.ok()) return ReportError(packed.status());
  absl::StatusOr<std::vector<std::vector<int>>> sequences =
      ReadCalibrationSequences(model_path, flags.tokenizer, (*model)->config.vocab_size, flags.calibration,
                               flags.calibration_lines, (*model)->config.max_seq_len);
  if (!sequences.ok()) return ReportError(sequences.status());
  EndToEndReport report;
  if (absl::Status s = TrainScalesEndToEnd(**model, *sequences, flags.options, *packed, &report); !s.ok()) return ReportError(s);
  PrintEndToEndReport(report);
  if (!report.kept_original) packed->metadata["quant_method"] += absl::StrCat(" + e2e scales (", flags.options.epochs, " epochs)");
  if (absl::Status s = WritePackedModel(*packed, flags.output); !s.ok()) return ReportError(s);
  std::fprintf(stderr, "wrote %s\n", flags.output.c_str());
  return 0;
}

}  // namespace

void AddRefineCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<RefineFlags>();
  CLI::App* cmd = app.add_subcommand(
      "refine", "Train a packed model's group scales end to end so its next-token distributions match its fp32 model's");
  cmd->add_option("-m,--model", flags->model, "The fp32/fp16 model the packed file was made from (the teacher)");
  cmd->add_option("-q,--quantized", flags->quantized, "Packed model to refine (.safetensors)")->required();
  cmd->add_option("-o,--output", flags->output, "Packed model to write (.safetensors)")->required();
  cmd->add_option("-t,--tokenizer", flags->tokenizer, "Tokenizer for the calibration text (default: beside the model)");
  cmd->add_option("--calibration", flags->calibration, "Calibration text, one sample per line")->capture_default_str();
  cmd->add_option("--calibration-lines", flags->calibration_lines, "Lines of the calibration text to use, A:B")
      ->capture_default_str();
  cmd->add_option("--epochs", flags->options.epochs, "Passes over the calibration text")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--batch", flags->options.batch_sequences, "Sequences per step")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--lr", flags->options.scale_lr, "Adam step for the scales")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--schedule", flags->options.schedule, "Adam steps kept constant, or decayed to zero along half a cosine")
      ->transform(CLI::CheckedTransformer(std::map<std::string, LrSchedule>{{"constant", LrSchedule::kConstant}, {"cosine", LrSchedule::kCosine}},
                                         CLI::ignore_case));
  cmd->add_option("--threads", flags->options.threads, "Threads; 0 = one per hardware thread")->check(CLI::NonNegativeNumber);
  cmd->callback([flags, exit_code] { *exit_code = RunRefine(*flags); });
}

}  // namespace accllm::cli
