// Runs the real `accllm` binary as a user would.
#include <sys/wait.h>

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::ReadFile;
using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;
using ::accllm::testing::ScratchDir;
using ::testing::HasSubstr;
using ::testing::Not;

struct RunResult {
  int exit_code;
  std::string out;
  std::string err;
};

RunResult RunCli(const std::string& args, const std::string& env = "") {
  ScratchDir dir;
  const std::string command = absl::StrCat(env, " ", ACCLLM_CLI_PATH, " ", args, " >", (dir / "out").string(),
                                           " 2>", (dir / "err").string(), " </dev/null");
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(dir / "out"), ReadFile(dir / "err")};
}

std::string Quote(const std::filesystem::path& p) { return absl::StrCat("'", p.string(), "'"); }

TEST(CliTest, GenerateIdsMatchTheReference) {
  const RunResult r = RunCli("generate -m " + Quote(RequireModelFile("stories260K.bin")) +
                             " -p 'Once upon a time' --temperature 0 -n 60 --output ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "1 403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408 419 292 411 322 "
            "265 282 295 433 426 385 328 432 358 394 261 370 432 352 266 268 388 426 338 391 266 267 337 335 312 432 "
            "398 312 286 267 414 270 333 415 426 13 438 310\n");
  EXPECT_THAT(r.err, HasSubstr("prompt tokens: 5"));
  EXPECT_THAT(r.err, HasSubstr("generated tokens: 60"));
  EXPECT_THAT(r.err, HasSubstr("tokens/s"));
}

TEST(CliTest, GenerateTextStreamsThePromptAndStory) {
  const RunResult r = RunCli("generate -p 'Once upon a time' --temperature 0 -n 20",
                             "ACCLLM_MODEL=" + Quote(RequireModelFile("stories260K.bin")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Once upon a time, there was a little girl named Lily."));
}

TEST(CliTest, GenerateJsonlAndSeeds) {
  const std::string base = "generate -m " + Quote(RequireModelFile("stories260K.bin")) +
                           " -t " + Quote(RequireModelFile("tok512.model")) + " -p 'Lily' -n 12 --output jsonl --seed 5";
  const RunResult a = RunCli(base);
  const RunResult b = RunCli(base);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const std::vector<std::string> lines = absl::StrSplit(a.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 13u);
  std::string text;
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) {
    const auto j = nlohmann::json::parse(lines[i]);
    EXPECT_TRUE(j["token"].is_number_integer());
    text += j["text"].get<std::string>();
  }
  const auto summary = nlohmann::json::parse(lines.back());
  EXPECT_EQ(summary["generated_tokens"], 12);
  EXPECT_EQ(summary["text"], text);
}

TEST(CliTest, ErrorsGoToStderrWithNonZeroExit) {
  const RunResult missing = RunCli("generate -m /nonexistent/model.bin -p hi");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/model.bin"));
  EXPECT_TRUE(missing.out.empty());

  const RunResult bad_flag = RunCli("generate --output xml");
  EXPECT_NE(bad_flag.exit_code, 0);
  EXPECT_THAT(bad_flag.err, HasSubstr("xml"));

  const RunResult bad_param = RunCli("generate -m " + Quote(RequireModelFile("stories260K.bin")) + " --top-p 3");
  EXPECT_NE(bad_param.exit_code, 0);
  EXPECT_THAT(bad_param.err, HasSubstr("top_p"));

  const RunResult no_command = RunCli("");
  EXPECT_NE(no_command.exit_code, 0);
}

TEST(CliTest, EverySubcommandHasHelp) {
  for (const char* sub : {"generate", "inspect", "synth", "quantize", "eval", "perplexity", "bench"}) {
    const RunResult r = RunCli(std::string(sub) + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_THAT(r.out, HasSubstr("Usage")) << sub;
  }
}

TEST(CliTest, PerplexityPrintsTheRunningAndFinalEstimate) {
  const std::string base = "perplexity -m " + Quote(RequireModelFile("stories260K.bin")) + " -t " +
                           Quote(RequireModelFile("tok512.bin")) + " -c 64 --chunks 3 -f ";
  const RunResult r = RunCli(base + Quote(RequireSharedFile("data/tinystories-dev.txt")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex(R"(\[1\][0-9.]+,\[2\][0-9.]+,\[3\][0-9.]+,)"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex(R"(Final estimate: PPL = [0-9.]+ \+/- [0-9.]+ +\(3 chunks of 64, 93 scored)"));
  EXPECT_THAT(r.err, HasSubstr("tokens/s"));

  const RunResult missing = RunCli(base + "/nonexistent.txt");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent.txt"));
  const RunResult bad_context = RunCli(base + Quote(RequireSharedFile("data/tinystories-dev.txt")) + " -c 2");
  EXPECT_NE(bad_context.exit_code, 0);
}

TEST(CliTest, QuantizeInspectAndGeneratePacked) {
  ScratchDir dir;
  const std::string packed = Quote(dir / "stories-w2.safetensors");
  const RunResult quantize = RunCli("quantize -m " + Quote(RequireModelFile("stories260K.bin")) + " -o " + packed +
                                    " --group-size 32 --prune wanda --prune-layers ffn --calibration " +
                                    Quote(::accllm::testing::RequireSharedFile("data/tinystories-dev.txt")));
  ASSERT_EQ(quantize.exit_code, 0) << quantize.err;
  EXPECT_THAT(quantize.err, HasSubstr("calibration text: 6 sequences"));
  EXPECT_THAT(quantize.err, HasSubstr("model.layers.4.mlp.up_proj.weight"));
  EXPECT_THAT(quantize.err, HasSubstr("[35/35]"));
  // The default recipe: rotated residual stream, GPTQ, block-wise reconstruction.
  EXPECT_THAT(quantize.err, HasSubstr("block reconstruction: 4 epochs over 6 sequences"));

  const RunResult inspect = RunCli("inspect " + packed);
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_THAT(inspect.out, HasSubstr("W2A8KV4"));
  EXPECT_THAT(inspect.out, HasSubstr("bits/weight"));
  EXPECT_THAT(inspect.out, HasSubstr("(15 of 35 linear layers 2:4 sparse)"));

  const RunResult generate = RunCli("generate -m " + packed + " -t " + Quote(RequireModelFile("tok512.bin")) +
                                    " -p 'Once upon a time' -n 20 --seed 1 --window 32 --output ids");
  ASSERT_EQ(generate.exit_code, 0) << generate.err;
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(generate.out, ' ', absl::SkipWhitespace())).size(), 25u);
  EXPECT_THAT(generate.err, HasSubstr("engine: cpu("));

  const RunResult reference = RunCli("generate -m " + packed + " -t " + Quote(RequireModelFile("tok512.bin")) +
                                     " --engine reference -p hi");
  EXPECT_NE(reference.exit_code, 0);
  EXPECT_THAT(reference.err, HasSubstr("reference engine runs fp32 models"));

  // Flag combinations quantize refuses, each with a message naming the problem.
  const auto expect_refused = [&](const std::string& flags, const std::string& message) {
    const RunResult r = RunCli("quantize -m " + Quote(RequireModelFile("stories260K.bin")) + " -o " +
                               Quote(dir / "x.safetensors") + " " + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_THAT(r.err, HasSubstr(message)) << flags;
  };
  expect_refused("--method rtn --prune magnitude --prune-layers 9", "bad layer selection");
  expect_refused("--method rtn --block-ap", "--block-ap needs --method gptq");
  expect_refused("--no-block-ap --block-ap-epochs 3", "--block-ap-* options tune block reconstruction");
  expect_refused("--method rtn --block-ap-batch 4", "--block-ap-* options tune block reconstruction");
  expect_refused("--method rtn --e2e-epochs 1", "--e2e-epochs needs --method gptq");
  expect_refused("--e2e-lr 1e-5", "--e2e-lr tunes end-to-end scale training");
  expect_refused("--layer-by-layer --sequential", "add --no-block-ap");
  expect_refused("--layer-by-layer --no-block-ap --e2e-epochs 1", "--layer-by-layer cannot train end to end");

  // Layer by layer: the same recipe (block reconstruction included) without the model's fp32 copy
  // in memory, Wanda's 2:4 too.
  const RunResult layered = RunCli("quantize -m " + Quote(RequireModelFile("stories260K.bin")) + " -o " +
                                   Quote(dir / "layered.safetensors") + " --layer-by-layer --group-size 32 " +
                                   "--prune wanda --prune-layers ffn --calibration " +
                                   Quote(::accllm::testing::RequireSharedFile("data/tinystories-dev.txt")));
  ASSERT_EQ(layered.exit_code, 0) << layered.err;
  EXPECT_THAT(layered.err, HasSubstr("block reconstruction after each layer's GPTQ: 4 epochs over 6 sequences"));
  EXPECT_THAT(layered.err, HasSubstr("layer 4: calibrated in"));
  EXPECT_THAT(layered.err, HasSubstr("[35/35]"));
  const RunResult layered_inspect = RunCli("inspect " + Quote(dir / "layered.safetensors"));
  ASSERT_EQ(layered_inspect.exit_code, 0) << layered_inspect.err;
  EXPECT_THAT(layered_inspect.out, HasSubstr("(15 of 35 linear layers 2:4 sparse)"));

  // refine: the packed file's scales trained end to end against the fp32 model; the codes stay.
  const std::string calibration = Quote(::accllm::testing::RequireSharedFile("data/tinystories-dev.txt"));
  const std::string refine = "refine -m " + Quote(RequireModelFile("stories260K.bin")) + " --calibration " + calibration +
                             " --calibration-lines 0:2 --epochs 1 --batch 1 --lr 1e-3 -o " + Quote(dir / "refined.safetensors");
  const RunResult refined = RunCli(refine + " -q " + packed);
  ASSERT_EQ(refined.exit_code, 0) << refined.err;
  EXPECT_THAT(refined.err, HasSubstr("KL from the fp32 model per position:"));
  const RunResult refined_inspect = RunCli("inspect " + Quote(dir / "refined.safetensors"));
  ASSERT_EQ(refined_inspect.exit_code, 0) << refined_inspect.err;
  EXPECT_THAT(refined_inspect.out, HasSubstr("(15 of 35 linear layers 2:4 sparse)"));
  const RunResult not_packed = RunCli(refine + " -q " + Quote(RequireModelFile("stories260K.bin")));
  EXPECT_NE(not_packed.exit_code, 0);
  EXPECT_THAT(not_packed.err, HasSubstr("accllm: error:"));
}

TEST(CliTest, EvalPrintsBothTables) {
  // Two stories of the dev text keep this quick under the sanitizers.
  ScratchDir dir;
  const std::vector<std::string> stories =
      absl::StrSplit(ReadFile(::accllm::testing::RequireSharedFile("data/tinystories-dev.txt")), '\n', absl::SkipEmpty());
  ASSERT_GE(stories.size(), 2u);
  ::accllm::testing::WriteFile(dir / "two.txt", stories[0] + "\n" + stories[1] + "\n");
  const std::string text = Quote(dir / "two.txt");
  const std::string common = "eval -m " + Quote(RequireModelFile("stories260K.bin")) + " -f " + text + " --calibration " +
                             text + " -c 64 --chunks 2 --group-size 32 --window 32 --kivi-group 16";
  const RunResult r = RunCli(common + " --long-tokens 256 --bucket 128");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| fp32 | 32 |"));
  EXPECT_THAT(r.out, HasSubstr("| +W2 rotated residual + GPTQ (`quantize --no-block-ap`) |"));
  EXPECT_THAT(r.out, HasSubstr("| +KV4 KIVI: keys per channel in groups of 16 tokens"));
  EXPECT_THAT(r.out, HasSubstr("| served, GPTQ: W2A8KV4 + Λ (4 sinks, window 32) (integer kernels) |"));
  EXPECT_THAT(r.out, HasSubstr("| 128-255 |"));
  const RunResult bad = RunCli(common + " --calibration-lines 5");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("bad line range"));
  std::string odd = common;
  odd.replace(odd.find("--kivi-group 16"), 15, "--kivi-group 15");
  const RunResult odd_group = RunCli(odd);
  EXPECT_NE(odd_group.exit_code, 0);
  EXPECT_THAT(odd_group.err, HasSubstr("--kivi-group must be even and at most the window"));
  const RunResult not_packed = RunCli(common + " --quantized " + Quote(RequireModelFile("stories260K.bin")));
  EXPECT_NE(not_packed.exit_code, 0);
  EXPECT_THAT(not_packed.err, HasSubstr("is not a packed model"));
}

TEST(CliTest, FpgaModelReportsContextsAndBatches) {
  const RunResult r = RunCli("fpga-model --contexts 128,4096 --batch 1,4 --cards 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| AccLLM (paper, W2A8KV4, 2:4, Λ) | 164.0 |"));
  EXPECT_THAT(r.out, HasSubstr("Decode tokens/s on one card"));
  EXPECT_THAT(r.out, HasSubstr("from its 453 descriptors"));
  EXPECT_THAT(r.out, HasSubstr("| RoPE + K/V rotation + KV4 write | 32 |"));
  EXPECT_THAT(r.out, HasSubstr("| 4096 |"));
  const RunResult bad = RunCli("fpga-model --contexts 128,x");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("bad context 'x'"));
}

// Lists of sizes: a clear error before any run for what is not a list of positive integers;
// --prefills 0 means no prefill runs.
TEST(CliTest, BenchChecksItsListsFirst) {
  const std::string tiny = "bench --shapes 'dim=64,ffn=160,layers=2,heads=4,vocab=300' --threads 1 ";
  for (const auto& [flags, message] : {std::pair{"--batches 1,x --no-long", "bad batch size 'x'"},
                                       {"--batches '' --no-long", "no batch size given"},
                                       {"--batches 0 --no-long", "bad batch size '0'"},
                                       {"--batches 1 --prefills 8,-8 --no-long", "bad prefill length '-8'"},
                                       {"--batches 1 --prefills 0 --long-points 1024,2k", "bad long-run point '2k'"}}) {
    const RunResult r = RunCli(tiny + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_THAT(r.err, HasSubstr(message)) << flags;
    EXPECT_THAT(r.out, Not(HasSubstr("| decode batch"))) << flags;  // refused before running anything
  }
  const RunResult no_shape = RunCli("bench --shapes '' --batches 1 --no-long");
  EXPECT_NE(no_shape.exit_code, 0);
  EXPECT_THAT(no_shape.err, HasSubstr("no shape given"));
  const RunResult none = RunCli(tiny + "--batches 2 --prefills 0 --no-long");
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_THAT(none.out, HasSubstr("| decode batch 2 |"));
  EXPECT_THAT(none.out, Not(HasSubstr("| prefill")));
}

TEST(CliTest, BenchProfilesEveryStage) {
  const RunResult r = RunCli("bench --shapes 'dim=64,ffn=160,layers=2,heads=4,vocab=300' --batches 1,2 --prefills 8 "
                             "--no-long --profile --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| decode batch 2 |"));
  EXPECT_THAT(r.out, HasSubstr("| prefill 8 |"));
  // One profile row per mode, its stage shares adding up to the whole step.
  int rows = 0;
  for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
    const std::vector<std::string> cells = absl::StrSplit(line, '|');
    if (cells.size() != 14 || !absl::StrContains(line, "%")) continue;
    ++rows;
    double sum = 0;
    for (int stage = 3; stage < 11; ++stage) sum += std::stod(cells[static_cast<std::size_t>(stage)]);
    EXPECT_NEAR(sum, 100.0, 0.5) << line;
  }
  EXPECT_EQ(rows, 3) << r.out;
  const RunResult bad = RunCli("bench --shapes 'dim=64,ffn=160' --no-long");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("bad shape"));
}

TEST(CliTest, BenchQuantizeStagesAndPipeline) {
  const std::string shape = "--shape 'dim=64,ffn=192,layers=3,heads=4,vocab=300,seq=64' --tokens 128 --group-size 32";
  const RunResult stages = RunCli("bench-quantize " + shape);
  ASSERT_EQ(stages.exit_code, 0) << stages.err;
  EXPECT_THAT(stages.out, HasSubstr("| GPTQ + scale refit |"));
  const RunResult pipeline = RunCli("bench-quantize " + shape + " --pipeline --layers 2");
  ASSERT_EQ(pipeline.exit_code, 0) << pipeline.err;
  EXPECT_THAT(pipeline.out, HasSubstr("2 of 3 layers, 128 calibration tokens in 2 sequences"));
  EXPECT_THAT(pipeline.out, HasSubstr("| 1 |"));
  EXPECT_THAT(pipeline.out, HasSubstr("all 3 layers projected"));
  const RunResult too_many = RunCli("bench-quantize " + shape + " --layers 4");
  EXPECT_NE(too_many.exit_code, 0);
  EXPECT_THAT(too_many.err, HasSubstr("--layers 4 exceeds the shape's 3"));
}

TEST(CliTest, SynthThenInspect) {
  ScratchDir dir;
  const RunResult synth = RunCli("synth --shape dim=64,ffn=160,layers=2,heads=4,vocab=300 --seed 3 --format hf --dtype bf16 -o " +
                                 Quote(dir / "ckpt"));
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const RunResult inspect = RunCli("inspect " + Quote(dir / "ckpt"));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_THAT(inspect.out, HasSubstr("Hugging Face safetensors"));
  EXPECT_THAT(inspect.out, HasSubstr("BF16"));
  EXPECT_THAT(inspect.out, HasSubstr("16.00"));  // bits per weight

  const RunResult stories = RunCli("inspect " + Quote(RequireModelFile("stories260K.bin")));
  ASSERT_EQ(stories.exit_code, 0) << stories.err;
  EXPECT_THAT(stories.out, HasSubstr("parameters:  260032"));
  EXPECT_THAT(stories.out, HasSubstr("llama2.c legacy"));
}

}  // namespace
}  // namespace accllm
