// The XRT host driver without a card: XRT's real API in noop emulation, an xclbin we write from
// fpga/build/u280.cfg, and a test-only hook (tests/xrt_noop_compute.h) that makes noop run the
// C-simulated kernel on shadow device memory, so results are checked and a missing sync shows.
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>

#include <experimental/xrt_xclbin.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fpga/host/kernel_signatures.h"
#include "fpga/host/link_config_check.h"
#include "fpga/host/stripe_plan.h"
#include "fpga/host/xclbin_writer.h"
#include "fpga/host/xrt_backend.h"
#include "fpga/host/xrt_card.h"
#include "fpga/kernels/cycle_count.h"
#include "fpga/kernels/kv4_attention.h"
#include "fpga/kernels/step_descriptor.h"
#include "fpga/kernels/w2a8_engine.h"
#include "fpga/model/perf_model.h"
#include "fpga/model/unit_cycles.h"
#include "gmock/gmock.h"
#include "runtime/cpu/kernels.h"
#include "runtime/generate/generator.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/quantize_model.h"
#include "tests/real_model_logits.h"
#include "tests/test_support.h"
#include "tests/xrt_noop_compute.h"

namespace accllm::fpga {
namespace {

namespace fs = std::filesystem;
using ::accllm::testing::ReadFile;
using ::accllm::testing::RequireModelFile;
using ::accllm::testing::ScratchDir;
using ::accllm::testing::WriteFile;
using ::testing::HasSubstr;

// XRT finds its shims under $XILINX_XRT/lib; Debian installs them in the multiarch folder, so the
// test makes a folder of links. Set up before any test touches XRT (it reads these once).
class NoopXrt : public ::testing::Environment {
 public:
  void SetUp() override {
    const fs::path lib = root_.path() / "lib";
    fs::create_directories(lib);
    for (const auto& entry : fs::directory_iterator("/usr/lib/x86_64-linux-gnu")) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("libxrt_", 0) == 0) fs::create_symlink(entry.path(), lib / name);
    }
    fs::create_directory_symlink("/usr/lib/x86_64-linux-gnu/xrt", lib / "xrt");
    setenv("XILINX_XRT", root_.path().c_str(), 1);
    setenv("XCL_EMULATION_MODE", "noop", 1);
    setenv("USER", "accllm-test", 0);  // else XRT makes a socket under /tmp for an unnamed user
    const std::string cfg = ReadFile(fs::path(ACCLLM_SOURCE_DIR) / "fpga/build/u280.cfg");
    auto design = ParseLinkConfig(cfg);
    ASSERT_TRUE(design.ok()) << design.status();
    auto bytes = BuildXclbin(*design);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    xclbin_ = (root_.path() / "accllm_noop.xclbin").string();
    WriteFile(xclbin_, *bytes);
    // Test only: noop computes W2A8 runs with the C-simulated kernel on shadow device memory.
    const absl::Status hooked = ::accllm::testing::InstallNoopComputeHook(xclbin_);
    ASSERT_TRUE(hooked.ok()) << hooked;
  }
  static inline std::string xclbin_;

 private:
  ScratchDir root_;
};
const auto* const kNoop = ::testing::AddGlobalTestEnvironment(new NoopXrt);

TEST(XclbinWriterTest, DescribesTheLinkConfiguration) {
  const xrt::xclbin xclbin(NoopXrt::xclbin_);
  EXPECT_EQ(xclbin.get_xsa_name(), "xilinx_u280_gen3x16_xdma_1_202211_1");
  std::map<std::string, int> units;
  for (const auto& k : xclbin.get_kernels()) units[k.get_name()] = static_cast<int>(k.get_cus().size());
  EXPECT_EQ(units["accllm_w2a8"], 24);
  EXPECT_EQ(units["accllm_kv4_attention"], 2);
  EXPECT_EQ(units["accllm_sequencer"], 1);  // the element-wise units are the sequencer's
  EXPECT_EQ(units.size(), 3u);
  for (const auto& k : xclbin.get_kernels()) {
    const KernelSignature* sig = FindKernel(k.get_name());
    ASSERT_NE(sig, nullptr) << k.get_name();
    ASSERT_EQ(k.get_num_args(), sig->args.size());
    for (std::size_t i = 0; i < sig->args.size(); ++i) EXPECT_EQ(k.get_arg(static_cast<int>(i)).get_name(), sig->args[i].name);
  }
}

TEST(XclbinWriterTest, BadLinkConfigurationsNameTheLine) {
  EXPECT_THAT(std::string(ParseLinkConfig("nk=accllm_w2a8:2:a\n").status().message()), HasSubstr("line 1"));
  EXPECT_THAT(std::string(ParseLinkConfig("nk=nope:1:x\n").status().message()), HasSubstr("bad nk="));
  EXPECT_THAT(std::string(ParseLinkConfig("nk=accllm_swiglu:1:s\nsp=s.gate:HBM[40]\n").status().message()),
              HasSubstr("unknown memory 'HBM[40]'"));
  EXPECT_THAT(std::string(ParseLinkConfig("nk=accllm_swiglu:1:s\nsp=s.gate:HBM[0]\n").status().message()),
              HasSubstr("s.up has no sp= bank"));
}

// The shipped link configuration is the generator's output, and one v++ would link for a U280:
// every unit clocked and placed, every buffer bound to a bank the card has, one binding per AXI
// master, named HBM ports, and no port over its masters.
TEST(LinkConfigTest, ShippedConfigurationIsGeneratedAndLinkable) {
  const fs::path build = fs::path(ACCLLM_SOURCE_DIR) / "fpga/build";
  const std::string shipped = ReadFile(build / "u280.cfg");
  std::string generated;
  FILE* pipe = popen(("bash " + (build / "gen_u280_cfg.sh").string()).c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char chunk[4096];
  for (std::size_t n; (n = fread(chunk, 1, sizeof chunk, pipe)) > 0;) generated.append(chunk, n);
  ASSERT_EQ(pclose(pipe), 0);
  EXPECT_EQ(shipped, generated) << "regenerate: fpga/build/gen_u280_cfg.sh > fpga/build/u280.cfg";

  ASSERT_OK_AND_ASSIGN(XclbinDesign design, ParseLinkConfig(shipped));
  EXPECT_TRUE(CheckU280LinkConfig(design).ok());
  const std::vector<std::string> tags = U280MemoryTags();
  for (const ComputeUnit& u : design.units) {
    EXPECT_EQ(u.clock_hz, 225'000'000) << u.instance;
    for (const KernelArg& a : FindKernel(u.kernel)->args) {
      if (!a.buffer) continue;
      ASSERT_TRUE(u.bindings.contains(a.name)) << u.instance << "." << a.name;
      const MemoryBinding& b = u.bindings.at(a.name);
      for (int bank = b.first; bank <= b.last; ++bank) {
        EXPECT_NE(std::find(tags.begin(), tags.end(), absl::StrCat(b.type, "[", bank, "]")), tags.end());
      }
    }
  }
  const std::map<int, int> masters = HbmPortMasters(design);
  for (int port = 0; port < 24; ++port) EXPECT_EQ(masters.at(port), 1) << "weight channel " << port;
  // The shared channels: each W2A8 unit's shared master, each attention unit's, the sequencer's two
  // (its program; its element-wise units' buffers).
  int shared = 0;
  for (int port = 24; port < 28; ++port) {
    EXPECT_LE(masters.at(port), 7) << "shared channel " << port;
    shared += masters.at(port);
  }
  EXPECT_EQ(shared, 24 + 2 + 2);
  // Both attention units and the sequencer (its KV4 writes) on every KV channel: the cache is
  // striped over all four.
  for (int port = 28; port < 32; ++port) EXPECT_EQ(masters.at(port), 3) << "KV channel " << port;

  // Each chain leaves the sequencer, passes every unit of its kind once, and returns.
  for (const auto& [kernel, prefix, units] : {std::tuple{"accllm_w2a8", "w2a8", 24},
                                              std::tuple{"accllm_kv4_attention", "attention", 2}}) {
    for (const auto& [out, in, back] : {std::tuple{"_commands", "commands_in", "_returned"},
                                        std::tuple{"_seed", "done_in", "_done"}}) {
      std::string unit = "accllm_sequencer_1", port = std::string(prefix) + out;
      std::set<std::string> visited;
      for (int hop = 0; hop <= units; ++hop) {
        const auto next = std::find_if(design.streams.begin(), design.streams.end(), [&](const StreamConnection& c) {
          return c.from_unit == unit && c.from_port == port;
        });
        ASSERT_NE(next, design.streams.end()) << unit << "." << port;
        unit = next->to_unit;
        if (hop < units) {
          EXPECT_EQ(next->to_port, in);
          EXPECT_TRUE(absl::StartsWith(unit, kernel)) << unit;
          EXPECT_TRUE(visited.insert(unit).second) << unit;
          port = std::string(in) == "commands_in" ? "commands_out" : "done_out";
        } else {
          EXPECT_EQ(unit, "accllm_sequencer_1");
          EXPECT_EQ(next->to_port, std::string(prefix) + back);
        }
      }
    }
  }
}

// The unit chains' streams: each connected once, output to input, of one width.
TEST(LinkConfigTest, StreamsAreConnectedOnceAndMatch) {
  const std::string shipped = ReadFile(fs::path(ACCLLM_SOURCE_DIR) / "fpga/build/u280.cfg");
  const auto check = [](const std::string& cfg) -> absl::Status {
    absl::StatusOr<XclbinDesign> design = ParseLinkConfig(cfg);
    return design.ok() ? CheckU280LinkConfig(*design) : design.status();
  };
  const std::string line = "sc=accllm_w2a8_3.done_out:accllm_w2a8_4.done_in\n";
  ASSERT_NE(shipped.find(line), std::string::npos);
  std::string missing = shipped;
  missing.erase(missing.find(line), line.size());
  EXPECT_THAT(check(missing).message(), HasSubstr("accllm_w2a8_3.done_out is not connected (sc=)"));
  EXPECT_THAT(check(shipped + line).message(), HasSubstr("connected more than once"));
  EXPECT_THAT(check(shipped + "sc=accllm_w2a8_4.done_in:accllm_w2a8_3.done_out\n").message(),
              HasSubstr("has no output stream 'done_in'"));
  EXPECT_THAT(check(shipped + "sc=accllm_w2a8_4.weights:accllm_w2a8_3.done_in\n").message(),
              HasSubstr("has no output stream 'weights'"));
  EXPECT_THAT(check(shipped + "sc=accllm_w2a8_4.done_out\n").message(), HasSubstr("bad sc="));
  std::string crossed = missing;
  const std::string seed = "sc=accllm_sequencer_1.w2a8_seed:accllm_w2a8_1.done_in\n";
  crossed.erase(crossed.find(seed), seed.size());
  EXPECT_THAT(check(crossed + "sc=accllm_w2a8_3.commands_out:accllm_w2a8_4.done_in\n").message(),
              HasSubstr("sends "));
}

TEST(LinkConfigTest, RefusesWhatVppOrTheCardWouldNot) {
  const std::string unit = "nk=accllm_swiglu:1:s\n";
  const std::string clocked = "[clock]\nfreqHz=225000000:s\n[connectivity]\n" + unit + "slr=s:SLR2\n";
  const auto check = [](const std::string& cfg) -> absl::Status {
    absl::StatusOr<XclbinDesign> design = ParseLinkConfig(cfg);
    return design.ok() ? CheckU280LinkConfig(*design) : design.status();
  };
  EXPECT_TRUE(check(clocked + "sp=s.gate:HBM[24:27].25\nsp=s.up:HBM[3]\n").ok());
  EXPECT_THAT(check(unit + "slr=s:SLR2\nsp=s.gate:HBM[0]\nsp=s.up:HBM[1]\n").message(), HasSubstr("no [clock]"));
  EXPECT_THAT(check("[clock]\nfreqHz=400000000:s\n" + unit + "slr=s:SLR2\nsp=s.gate:HBM[0]\nsp=s.up:HBM[1]\n").message(),
              HasSubstr("above the U280's"));
  EXPECT_THAT(check("[clock]\nfreqHz=225000000:s\n" + unit + "sp=s.gate:HBM[0]\nsp=s.up:HBM[1]\n").message(),
              HasSubstr("not SLR0, SLR1 or SLR2"));
  EXPECT_THAT(check(clocked + "sp=s.gate:HBM[24:27]\nsp=s.up:HBM[1]\n").message(), HasSubstr("needs the port"));
  EXPECT_THAT(check(clocked + "sp=s.gate:HBM[24:27].28\nsp=s.up:HBM[1]\n").message(), HasSubstr("needs the port"));
  EXPECT_THAT(check(clocked + "sp=s.gate:HBM[30:33].30\nsp=s.up:HBM[1]\n").message(), HasSubstr("unknown memory"));
  EXPECT_THAT(check(clocked + "sp=s.gate:HBM[0]\nsp=s.up:HBM[1]\nsp=t.up:HBM[1]\n").message(), HasSubstr("unknown unit 't'"));
  // accllm_rmsnorm_a8's x, codes, act_scale and group_sums are one master (gmem0).
  std::string split = "[clock]\nfreqHz=225000000:r\nnk=accllm_rmsnorm_a8:1:r\nslr=r:SLR2\nsp=r.weight:HBM[2]\n";
  for (const char* arg : {"x", "codes", "act_scale"}) split += absl::StrCat("sp=r.", arg, ":HBM[0]\n");
  EXPECT_TRUE(check(split + "sp=r.group_sums:HBM[0]\n").ok());
  EXPECT_THAT(check(split + "sp=r.group_sums:HBM[1]\n").message(), HasSubstr("apart from the other arguments of its AXI master gmem0"));
  // 16 masters (8 units x 2) on one port.
  std::string crowded = "[clock]\n";
  std::string units = "nk=accllm_swiglu:8:";
  for (int i = 0; i < 8; ++i) {
    crowded += absl::StrCat("freqHz=225000000:s", i, "\n");
    units += absl::StrCat(i ? "." : "", "s", i);
  }
  crowded += units + "\n";
  for (int i = 0; i < 8; ++i) crowded += absl::StrCat("slr=s", i, ":SLR0\nsp=s", i, ".gate:HBM[24:27].24\nsp=s", i, ".up:HBM[24]\n");
  EXPECT_THAT(check(crowded).message(), HasSubstr("16 AXI masters on HBM port 24, at most 15"));
}

// The host's stripes, each run on the C-simulated unit from its own slice of the tensor, give the
// layer's product bit for bit.
TEST(StripePlanTest, StripesReproduceTheLayer) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (const auto& [rows, cols, units] : {std::tuple{100, 256, 5}, std::tuple{16, 128, 24}, std::tuple{300, 512, 24}}) {
    const W2Shape shape{rows, cols, 128, false};
    std::vector<float> w(static_cast<std::size_t>(rows) * cols);
    for (float& v : w) v = normal(rng);
    auto m = QuantizeW2(w, shape);
    ASSERT_TRUE(m.ok());
    const W2View v = m->view();
    A8Batch x(shape.cols_padded(), shape.group_size, 3);
    for (int t = 0; t < 3; ++t) {
      std::vector<float> a(cols);
      for (float& e : a) e = normal(rng) * 20;
      x.Quantize(t, a);
    }
    std::vector<float> expected(3 * rows), got(3 * rows, -1);
    kScalarKernels.matmul_w2a8(v, x, 0, shape.row_tiles(), expected.data(), rows);
    const std::vector<Stripe> plan = PlanStripes(shape, units);
    EXPECT_EQ(plan.back().tile_end, shape.row_tiles());
    for (const Stripe& st : plan) {
      std::vector<float> out(3 * st.rows);
      hls::W2A8Engine<hls::kW2A8TokenLanes>(reinterpret_cast<const hls::Beat*>(v.codes + st.code_offset), nullptr,
                                            v.scales + st.param_offset, v.zeros + st.param_offset, x.codes(0),
                                            x.group_sums(0), x.scales(), out.data(), st.rows, shape.cols_padded(),
                                            shape.group_size, 0, 3, st.rows, 0, st.tile_end - st.tile_begin);
      for (int t = 0; t < 3; ++t) std::copy_n(&out[t * st.rows], st.rows, &got[t * rows + st.row0]);
    }
    EXPECT_EQ(got, expected) << rows << "x" << cols << " over " << units;
  }
}

TEST(XrtCardTest, OpensLoadsAndPlacesBuffersByConnectivity) {
  ASSERT_EQ(CountCards(), 1);  // the noop shim's one device
  auto card = XrtCard::Open(0, NoopXrt::xclbin_);
  ASSERT_TRUE(card.ok()) << card.status();
  EXPECT_EQ((*card)->units(), 24);
  EXPECT_EQ((*card)->platform(), "xilinx_u280_gen3x16_xdma_1_202211_1");
  // Unit i's weights sit in HBM[i], its activations and outputs in the shared HBM[24].
  for (int unit : {0, 5, 23}) {
    EXPECT_EQ((*card)->BankOf(unit, kW2A8Weights), unit);
    EXPECT_EQ((*card)->BankOf(unit, kW2A8WeightHalves), unit);
    EXPECT_EQ((*card)->BankOf(unit, kW2A8SharedCodes), 24);
    EXPECT_EQ((*card)->BankOf(unit, kW2A8SharedFloats), 24);
  }
  // The KV cache over the four KV pseudo-channels.
  for (int c = 0; c < 4; ++c) EXPECT_EQ((*card)->KvBankOf(c), 28 + c);
  EXPECT_EQ(XrtCard::Open(0, "/nonexistent.xclbin").status().code(), absl::StatusCode::kUnavailable);
}

TEST(XrtCardTest, AnXclbinWithoutW2A8UnitsIsRefused) {
  ScratchDir dir;
  auto design = ParseLinkConfig("nk=accllm_swiglu:1:s\nsp=s.gate:HBM[0]\nsp=s.up:HBM[1]\n");
  ASSERT_TRUE(design.ok()) << design.status();
  WriteFile(dir / "small.xclbin", *BuildXclbin(*design));
  auto card = XrtCard::Open(0, (dir / "small.xclbin").string());
  EXPECT_EQ(card.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(card.status().message()), HasSubstr("no accllm_w2a8 compute units"));
  // The card runs its steps on the layer sequencer: an image without one is refused too.
  std::string cfg = ReadFile(fs::path(ACCLLM_SOURCE_DIR) / "fpga/build/u280.cfg");
  for (std::size_t at; (at = cfg.find("accllm_sequencer_1")) != std::string::npos;) {
    const std::size_t line = cfg.rfind('\n', at) + 1;
    cfg.erase(line, cfg.find('\n', at) - line);
  }
  auto without = ParseLinkConfig(cfg);
  ASSERT_TRUE(without.ok()) << without.status();
  WriteFile(dir / "no-sequencer.xclbin", *BuildXclbin(*without));
  card = XrtCard::Open(0, (dir / "no-sequencer.xclbin").string());
  EXPECT_EQ(card.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(card.status().message()), HasSubstr("no accllm_sequencer compute units"));
}

// The whole host flow on stories260K: every layer uploaded and striped, prefill and decode
// steps run on the card's units (computed by the test hook), and the tokens are the CPU engine's.
// stories260K as the card runs it: W2 (round to nearest, group 32) with 2:4 FFN layers, written
// to `dir` and mapped back as a packed file.
absl::StatusOr<AnyModel> PackedStories(const fs::path& dir) {
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(RequireModelFile("stories260K.bin").string());
  if (!model.ok()) return model.status();
  QuantizeOptions q;
  q.group_size = 32;
  q.method = QuantMethod::kRtn;
  q.prune = PruneMethod::kMagnitude;
  q.prune_layers = "ffn";
  absl::StatusOr<PackedContents> packed = QuantizeModel(**model, q, nullptr, nullptr);
  if (!packed.ok()) return packed.status();
  const std::string path = (dir / "s.safetensors").string();
  if (absl::Status s = WritePackedModel(*packed, path); !s.ok()) return s;
  return LoadAnyModel(path, LoadMode::kMap);
}

TEST(XrtBackendTest, GeneratesTheCpuEnginesTokensThroughXrt) {
  ScratchDir dir;
  auto any = PackedStories(dir.path());
  ASSERT_TRUE(any.ok()) << any.status();
  auto tokenizer = LoadTokenizer(RequireModelFile("tok512.bin").string());
  ASSERT_TRUE(tokenizer.ok());

  BackendOptions options;
  options.xclbin = NoopXrt::xclbin_;
  options.window = 32;
  auto card = MakeXrtBackend(options, *any);
  ASSERT_TRUE(card.ok()) << card.status();
  EXPECT_THAT((*card)->name(), ::testing::StartsWith("fpga0/xrt("));
  options.engine = "cpu";
  auto cpu = MakeBackend(options, *any);
  ASSERT_TRUE(cpu.ok());
  GenerationOptions g;
  g.sampling.temperature = 0.0f;
  g.max_new_tokens = 60;
  g.ignore_eos = true;
  const int unit_starts_before = ::accllm::testing::NoopComputedRuns();
  const int steps_before = ::accllm::testing::NoopComputedSequencerRuns();
  auto on_card = (*Generator::Create(**card, **tokenizer))->Generate("Once upon a time", g);
  auto on_cpu = (*Generator::Create(**cpu, **tokenizer))->Generate("Once upon a time", g);
  ASSERT_TRUE(on_card.ok()) << on_card.status();
  ASSERT_TRUE(on_cpu.ok());
  EXPECT_EQ(on_card->generated_ids, on_cpu->generated_ids);
  // One sequencer start per step (1 prefill + 59 decode steps), each running the whole forward
  // pass on the card; the 24 W2A8 and 2 attention units are started once, at the first step, and
  // serve the sequencer's commands from then on.
  EXPECT_EQ(::accllm::testing::NoopComputedSequencerRuns() - steps_before, 60);
  EXPECT_EQ(::accllm::testing::NoopComputedRuns() - unit_starts_before, 26);
  // The same logits as the CPU engine, bit for bit, past the window (sinks included).
  std::vector<int> tokens(80);
  for (int i = 0; i < 80; ++i) tokens[i] = 1 + (i * 37) % 500;
  std::vector<float> card_logits((*any).config().vocab_size), cpu_logits(card_logits.size());
  SequenceKv card_seq((*card)->page_pool(), (*card)->page_tokens(), (*card)->lambda());
  SequenceKv cpu_seq((*cpu)->page_pool(), (*cpu)->page_tokens(), (*cpu)->lambda());
  ASSERT_TRUE((*card)->Prefill(card_seq, tokens, card_logits).ok());
  ASSERT_TRUE((*cpu)->Prefill(cpu_seq, tokens, cpu_logits).ok());
  EXPECT_EQ(std::memcmp(card_logits.data(), cpu_logits.data(), card_logits.size() * sizeof(float)), 0);

  // The card reports the attention unit's span, which admission holds requests to.
  EXPECT_EQ((*card)->max_attention_span(), 8192);

  options.xclbin.clear();
  EXPECT_THAT(std::string(MakeXrtBackend(options, *any).status().message()), HasSubstr("needs --xclbin"));
}

// On a real model (gutenberg30M, head size 64) too: the card's logits are the CPU engine's, bit
// for bit, prefilling held-out text past the window and decoding (every CPU path and fpga-sim are
// held to the scalar path's in cross_device_logits_test.cc).
TEST(XrtBackendTest, RealModelLogitsAreTheCpuEnginesBitForBit) {
  ScratchDir dir;
  auto any = ::accllm::testing::PackedGutenberg30M(dir.path());
  ASSERT_TRUE(any.ok()) << any.status();
  auto prompt = ::accllm::testing::GutenbergDevPrompt(48);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  BackendOptions options;
  options.xclbin = NoopXrt::xclbin_;
  options.window = 32;  // the 48-token prompt runs past it: sink runs and a sliding window
  auto card = MakeXrtBackend(options, *any);
  ASSERT_TRUE(card.ok()) << card.status();
  options.engine = "cpu";
  auto cpu = MakeBackend(options, *any);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ::accllm::testing::ExpectSameLogits(::accllm::testing::GreedyLogits(**card, *prompt, 6),
                                      ::accllm::testing::GreedyLogits(**cpu, *prompt, 6));
}

// The performance model's unit cycles come from the kernels' loops: a prefill step and a decode
// step of gutenberg30M through the XRT driver (one sequencer start each: 24 W2A8 stripes, calls of
// T tokens, the attention unit over the Λ page runs), counted in C simulation, equal what
// fpga/model/unit_cycles.h derives from the same shapes.
TEST(XrtBackendTest, SimulatedUnitCyclesAreTheModels) {
  ScratchDir dir;
  auto any = ::accllm::testing::PackedGutenberg30M(dir.path());
  ASSERT_TRUE(any.ok()) << any.status();
  auto prompt = ::accllm::testing::GutenbergDevPrompt(40);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  BackendOptions options;
  options.xclbin = NoopXrt::xclbin_;
  options.window = 32;
  auto card = MakeXrtBackend(options, *any);
  ASSERT_TRUE(card.ok()) << card.status();
  const LlamaConfig& c = any->config();
  const EngineWeights weights = any->packed->ToEngineWeights();

  const auto expected = [&](int64_t first_position, int n) {
    int64_t w2a8 = 0, attention = 0;
    for (const EngineLayer& l : weights.layers) {
      for (const LinearWeights* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) {
        const W2Shape& s = w->w2->shape;
        for (const Stripe& st : PlanStripes(s, 24)) {
          for (int t0 = 0; t0 < n; t0 += hls::kW2A8TokenLanes) {
            w2a8 += W2A8CallCycles({s.cols_padded(), s.group_size, s.sparse24,
                                    std::min(hls::kW2A8TokenLanes, n - t0), st.tile_end - st.tile_begin});
          }
        }
      }
      // Items are (token, head), token-major, in groups of the unit's lanes.
      std::vector<QuerySpan> items;
      for (int t = 0; t < n; ++t) {
        for (int h = 0; h < c.n_heads; ++h) {
          items.push_back(QuerySpanAt(first_position + t, (*card)->lambda(), (*card)->page_tokens()));
        }
      }
      for (std::size_t g = 0; g < items.size(); g += hls::kAttentionQueryLanes) {
        attention += AttentionGroupCycles(
            c.head_size(), std::span(items).subspan(g, std::min<std::size_t>(hls::kAttentionQueryLanes, items.size() - g)));
      }
    }
    return std::pair{w2a8, attention};
  };
  SequenceKv seq((*card)->page_pool(), (*card)->page_tokens(), (*card)->lambda());
  std::vector<float> logits(c.vocab_size);
  hls::ResetSimulatedCycles();
  ASSERT_TRUE((*card)->Prefill(seq, *prompt, logits).ok());
  const auto [prefill_w2a8, prefill_attention] = expected(0, static_cast<int>(prompt->size()));
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kW2A8), prefill_w2a8);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kAttention), prefill_attention);

  hls::ResetSimulatedCycles();
  SequenceKv* seqs[] = {&seq};
  const int next[] = {5};
  ASSERT_TRUE((*card)->Decode(seqs, next, logits).ok());
  const auto [decode_w2a8, decode_attention] = expected(static_cast<int64_t>(prompt->size()), 1);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kW2A8), decode_w2a8);
  EXPECT_EQ(hls::SimulatedCycles(hls::CycleUnit::kAttention), decode_attention);
  EXPECT_GT(decode_w2a8, 0);
  EXPECT_GT(decode_attention, 0);

  // The performance model's step, built from the same unit cycles, counts the same.
  Workload work;
  work.config = c;
  work.context = static_cast<int>(prompt->size()) + 1;
  work.window = 32;
  AcceleratorDesign design;
  design.token_lanes = hls::kW2A8TokenLanes;
  const Estimate e = EstimateAccelerator({}, design, work);
  EXPECT_EQ(e.w2a8_cycles, decode_w2a8);
  EXPECT_EQ(e.attention_cycles, decode_attention);
}

// The KV pool against the card's KV channels: more pages than HBM 28-31 hold are refused, naming
// the bank, before any buffer is made (the capping of the server's default sizing is
// device_limits_test.cc's).
TEST(XrtBackendTest, KvPoolsAreSizedToTheCardsKvBanks) {
  ScratchDir dir;
  auto any = PackedStories(dir.path());
  ASSERT_TRUE(any.ok()) << any.status();
  BackendOptions options;
  options.xclbin = NoopXrt::xclbin_;
  options.window = 32;
  options.kv_pages = 50'000'000;
  auto refused = MakeXrtBackend(options, *any);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("in each KV channel (HBM[28], HBM[29], HBM[30], HBM[31]), which holds 256 MiB"));
  options.kv_pages = 64;
  auto card = MakeXrtBackend(options, *any);
  ASSERT_TRUE(card.ok()) << card.status();
  EXPECT_EQ((*card)->page_pool().total(), 64);
}

// A compute unit that faults ends the step with an error the device pool acts on (the server
// then takes the card out of service and moves its streams: server_ops_test.cc).
TEST(XrtBackendTest, AFaultingRunIsAStepError) {
  ScratchDir dir;
  auto any = PackedStories(dir.path());
  ASSERT_TRUE(any.ok()) << any.status();
  BackendOptions options;
  options.xclbin = NoopXrt::xclbin_;
  options.window = 32;
  auto card = MakeXrtBackend(options, *any);
  ASSERT_TRUE(card.ok()) << card.status();
  std::vector<float> logits((*any).config().vocab_size);
  const std::vector<int> prompt = {1, 400, 20, 33};
  SequenceKv seq((*card)->page_pool(), (*card)->page_tokens(), (*card)->lambda());
  ::accllm::testing::NoopFailNextRuns("accllm_sequencer", 1);
  const absl::Status failed = (*card)->Prefill(seq, prompt, logits);
  ::accllm::testing::NoopFailNextRuns("", 0);
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal) << failed;
  EXPECT_THAT(std::string(failed.message()), HasSubstr("the sequencer ended in state"));
  // The step is lost, not the card's state: the same prefill on a fresh sequence then succeeds.
  SequenceKv again((*card)->page_pool(), (*card)->page_tokens(), (*card)->lambda());
  EXPECT_TRUE((*card)->Prefill(again, prompt, logits).ok());
}

// On a card (and here) data written to a buffer reaches the device only through sync: a
// sequencer start over activations that were written but not synced sees stale memory.
TEST(XrtCardTest, AMissingSyncIsCaught) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(128);
  for (float& v : x) v = normal(rng);
  A8Batch expected(128, 128, 1);
  expected.Quantize(0, x);

  xrt::device device(0);
  const xrt::uuid uuid = device.load_xclbin(NoopXrt::xclbin_);
  xrt::kernel sequencer(device, uuid, "accllm_sequencer:{accllm_sequencer_1}");
  const int bank = sequencer.group_id(kSequencerProgram);
  xrt::bo input(device, 4096, bank), codes(device, 4096, bank), sums(device, 4096, bank), scale(device, 4096, bank);
  xrt::bo program(device, 4096, bank);
  hls::StepDescriptor a8;  // one A8 descriptor: x -> codes, group sums, scale
  a8.op = hls::StepOp::kA8;
  a8.tokens = 1;
  a8.n[0] = a8.n[1] = a8.n[2] = 128;
  a8.p[0] = input.address();
  a8.p[1] = codes.address();
  a8.p[2] = sums.address();
  a8.p[3] = scale.address();
  program.write(&a8, sizeof a8, 0);
  program.sync(XCL_BO_SYNC_BO_TO_DEVICE);
  input.write(x.data(), x.size() * sizeof(float), 0);
  const auto run_and_read = [&] {
    xrt::run run(sequencer);
    run.set_arg(kSequencerProgram, program);
    run.set_arg(kSequencerCount, 1);
    run.start();
    run.wait();
    codes.sync(XCL_BO_SYNC_BO_FROM_DEVICE);
    std::vector<int8_t> y(128);
    codes.read(y.data(), y.size(), 0);
    return y;
  };
  const std::vector<int8_t> want(expected.codes(0), expected.codes(0) + 128);
  EXPECT_NE(run_and_read(), want);  // the activations never reached the device
  input.sync(XCL_BO_SYNC_BO_TO_DEVICE);
  EXPECT_EQ(run_and_read(), want);
}

}  // namespace
}  // namespace accllm::fpga
