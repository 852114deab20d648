// Every malformed model gets an error that names the file and the problem: never a crash, never
// a read past the end (this suite also runs under AddressSanitizer).
#include <cstring>
#include <filesystem>

#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/llama2c_format.h"
#include "runtime/model/load_model.h"
#include "runtime/model/synthesize.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

namespace fs = std::filesystem;
using ::accllm::testing::ReadFile;
using ::accllm::testing::RequireModelFile;
using ::accllm::testing::ScratchDir;
using ::accllm::testing::WriteFile;
using ::testing::HasSubstr;

// Loads `path` and expects failure with a message naming `names` and containing `problem`.
void ExpectLoadError(const fs::path& path, const std::string& problem = "", const fs::path& names = {}) {
  const auto result = LoadModel(path.string());
  ASSERT_FALSE(result.ok()) << path << " loaded but should not have";
  const std::string message(result.status().message());
  EXPECT_THAT(message, HasSubstr((names.empty() ? path : names).string()));
  EXPECT_THAT(message, HasSubstr(problem));
}

std::vector<std::size_t> CutPoints(std::size_t size) {
  std::vector<std::size_t> cuts = {0, 1, 3, 4, 8, 27, 28, 29, 255, 256, 257, size / 2, size - 1};
  for (std::size_t c = 512; c < size; c += std::max<std::size_t>(1, size / 97)) cuts.push_back(c);
  std::erase_if(cuts, [&](std::size_t c) { return c >= size; });
  return cuts;
}

TEST(LoaderRobustnessTest, TruncatedLegacyBin) {
  const std::string full = ReadFile(RequireModelFile("stories260K.bin"));
  ASSERT_GT(full.size(), 1000u);
  ScratchDir dir;
  for (std::size_t cut : CutPoints(full.size())) {
    SCOPED_TRACE(cut);
    const fs::path path = dir / "cut.bin";
    WriteFile(path, full.substr(0, cut));
    ExpectLoadError(path);
  }
  WriteFile(dir / "long.bin", full + "junk");
  ExpectLoadError(dir / "long.bin", "needs 1056540 bytes but the file has 1056544");
}

TEST(LoaderRobustnessTest, TruncatedV1Bin) {
  ASSERT_OK_AND_ASSIGN(auto source, LoadModel(RequireModelFile("stories260K.bin").string()));
  ScratchDir dir;
  ASSERT_OK(WriteLlama2cModel(ModelWeightSource(*source), (dir / "v1.bin").string(), Llama2cVersion::kV1));
  const std::string full = ReadFile(dir / "v1.bin");
  for (std::size_t cut : CutPoints(full.size())) {
    SCOPED_TRACE(cut);
    WriteFile(dir / "cut.bin", full.substr(0, cut));
    ExpectLoadError(dir / "cut.bin");
  }
}

TEST(LoaderRobustnessTest, CorruptLegacyHeaderFields) {
  const std::string full = ReadFile(RequireModelFile("stories260K.bin"));
  ScratchDir dir;
  const int32_t bad_values[] = {0, -1, 3, 7, 1 << 30, INT32_MIN};
  for (int field = 0; field < 7; ++field) {
    for (int32_t value : bad_values) {
      SCOPED_TRACE(::testing::Message() << "field " << field << " = " << value);
      std::string bytes = full;
      std::memcpy(bytes.data() + 4 * field, &value, 4);
      const fs::path path = dir / "corrupt.bin";
      WriteFile(path, bytes);
      // Some values are valid in isolation (e.g. 7 layers): then the size check catches them.
      ExpectLoadError(path);
    }
  }
  std::string bytes = full;
  const int32_t three_heads = 3;  // 64 is not divisible by 3
  std::memcpy(bytes.data() + 12, &three_heads, 4);
  WriteFile(dir / "heads.bin", bytes);
  ExpectLoadError(dir / "heads.bin", "not divisible by n_heads");
}

TEST(LoaderRobustnessTest, CorruptV1Header) {
  ASSERT_OK_AND_ASSIGN(auto source, LoadModel(RequireModelFile("stories260K.bin").string()));
  ScratchDir dir;
  ASSERT_OK(WriteLlama2cModel(ModelWeightSource(*source), (dir / "v1.bin").string(), Llama2cVersion::kV1));
  const std::string full = ReadFile(dir / "v1.bin");

  std::string bytes = full;
  const int32_t version2 = 2;
  std::memcpy(bytes.data() + 4, &version2, 4);
  WriteFile(dir / "version.bin", bytes);
  ExpectLoadError(dir / "version.bin", "unsupported version 2");

  bytes = full;
  bytes[8 + 28] = 7;  // shared_classifier flag
  WriteFile(dir / "flag.bin", bytes);
  ExpectLoadError(dir / "flag.bin", "shared_classifier flag is 7");

  bytes = full;
  bytes[8 + 28] = 0;  // claims a separate classifier the file does not hold
  WriteFile(dir / "unshared.bin", bytes);
  ExpectLoadError(dir / "unshared.bin", "truncated?");
}

TEST(LoaderRobustnessTest, MissingFileAndWrongKinds) {
  ScratchDir dir;
  const auto missing = LoadModel((dir / "nope.bin").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.bin"));
  WriteFile(dir / "lone.safetensors", "");
  ExpectLoadError(dir / "lone.safetensors", "pass the checkpoint directory");
  fs::create_directory(dir / "empty_dir");
  ExpectLoadError(dir / "empty_dir", "config.json");
}

// --- safetensors ---

// A file from a raw JSON header and a data section.
std::string MakeSafetensors(const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  const uint64_t len = header.size();
  std::memcpy(bytes.data(), &len, 8);
  return bytes + header + data;
}

TEST(LoaderRobustnessTest, InconsistentSafetensorsHeaders) {
  const std::string data(64, '\0');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {R"({"t": 5})", "entry is not an object"},
      {R"({"t": {"shape": [2], "data_offsets": [0, 8]}})", "missing string 'dtype'"},
      {R"({"t": {"dtype": "F32", "data_offsets": [0, 8]}})", "missing array 'shape'"},
      {R"({"t": {"dtype": "F32", "shape": [2]}})", "'data_offsets' must be"},
      {R"({"t": {"dtype": "F24", "shape": [2], "data_offsets": [0, 8]}})", "unknown dtype 'F24'"},
      {R"({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", "non-negative integers"},
      {R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", "need 12 bytes but data_offsets span 8"},
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [60, 68]}})", "fall outside the data section"},
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", "fall outside the data section"},
      {R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", "shape is too large"},
      {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", "overlap"},
      {R"({"__metadata__": {"k": 1}})", "is not a string"},
  };
  ScratchDir dir;
  for (const auto& [header, problem] : cases) {
    SCOPED_TRACE(header);
    const fs::path path = dir / "t.safetensors";
    WriteFile(path, MakeSafetensors(header, data));
    const auto result = SafetensorsFile::Open(path.string());
    ASSERT_FALSE(result.ok());
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(path.string()));
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(problem));
  }
  std::string huge_len(8, '\0');
  const uint64_t len = 1ull << 40;
  std::memcpy(huge_len.data(), &len, 8);
  WriteFile(dir / "h.safetensors", huge_len + "{}");
  const auto huge = SafetensorsFile::Open((dir / "h.safetensors").string());
  ASSERT_FALSE(huge.ok());
  EXPECT_THAT(std::string(huge.status().message()), HasSubstr("exceeds the file"));
}

// --- Hugging Face checkpoint directories ---

class HfRobustnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = ::accllm::testing::TinyConfig(/*shared_classifier=*/false);
    ASSERT_OK(WriteHfCheckpoint(SyntheticWeights(config_, 5), dir_.path().string(), {.dtype = DType::kF32, .max_shard_bytes = 8192}));
    ASSERT_TRUE(fs::exists(dir_ / "model.safetensors.index.json"));
    ASSERT_OK(LoadModel(dir_.path().string()).status());
  }

  nlohmann::json ReadConfig() { return nlohmann::json::parse(ReadFile(dir_ / "config.json")); }
  void WriteConfig(const nlohmann::json& j) { WriteFile(dir_ / "config.json", j.dump()); }

  LlamaConfig config_;
  ScratchDir dir_;
};

TEST_F(HfRobustnessTest, TruncatedShards) {
  for (const auto& entry : fs::directory_iterator(dir_.path())) {
    if (entry.path().extension() != ".safetensors") continue;
    const std::string full = ReadFile(entry.path());
    for (std::size_t cut : CutPoints(full.size())) {
      SCOPED_TRACE(::testing::Message() << entry.path() << " cut at " << cut);
      WriteFile(entry.path(), full.substr(0, cut));
      ExpectLoadError(dir_.path(), "", entry.path());
    }
    WriteFile(entry.path(), full);
  }
}

TEST_F(HfRobustnessTest, ConfigProblems) {
  const nlohmann::json good = ReadConfig();
  const fs::path config_path = dir_ / "config.json";

  WriteFile(config_path, "{ not json");
  ExpectLoadError(dir_.path(), "not a valid JSON object", config_path);

  nlohmann::json j = good;
  j.erase("hidden_size");
  WriteConfig(j);
  ExpectLoadError(dir_.path(), "missing \"hidden_size\"", config_path);

  j = good;
  j["num_attention_heads"] = "four";
  WriteConfig(j);
  ExpectLoadError(dir_.path(), "must be a positive integer", config_path);

  j = good;
  j["model_type"] = "gpt2";
  WriteConfig(j);
  ExpectLoadError(dir_.path(), "not supported", config_path);

  j = good;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  WriteConfig(j);
  ExpectLoadError(dir_.path(), "rope_scaling", config_path);

  j = good;
  j["num_key_value_heads"] = 3;
  WriteConfig(j);
  ExpectLoadError(dir_.path(), "not a multiple of n_kv_heads", config_path);

  fs::remove(config_path);
  ExpectLoadError(dir_.path(), "cannot open", config_path);
}

TEST_F(HfRobustnessTest, ShapesThatDisagreeWithConfig) {
  nlohmann::json j = ReadConfig();
  j["intermediate_size"] = 48;
  WriteConfig(j);
  const auto result = LoadModel(dir_.path().string());
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [40, 16] but config.json implies [48, 16]"));
}

TEST_F(HfRobustnessTest, MissingTensorsAndFiles) {
  // The classifier is required unless the embeddings are tied.
  nlohmann::json index = nlohmann::json::parse(ReadFile(dir_ / "model.safetensors.index.json"));
  const std::string lm_head_file = index["weight_map"]["lm_head.weight"];
  fs::remove(dir_ / lm_head_file);
  ExpectLoadError(dir_.path(), "cannot open", dir_ / lm_head_file);

  index["weight_map"].erase("lm_head.weight");
  // Rebuild the index without the deleted shard's tensors.
  nlohmann::json kept = nlohmann::json::object();
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (file != lm_head_file) kept[name] = file;
  }
  index["weight_map"] = kept;
  WriteFile(dir_ / "model.safetensors.index.json", index.dump());
  ExpectLoadError(dir_.path(), "missing tensor", dir_.path());

  fs::remove(dir_ / "model.safetensors.index.json");
  for (const auto& entry : fs::directory_iterator(dir_.path())) {
    if (entry.path().extension() == ".safetensors") fs::remove(entry.path());
  }
  ExpectLoadError(dir_.path(), "no *.safetensors files", dir_.path());
}

TEST_F(HfRobustnessTest, WrongDType) {
  ScratchDir other;
  ASSERT_OK(WriteHfCheckpoint(SyntheticWeights(config_, 5), other.path().string(), {}));
  // Rewrite one tensor as I32 with the same byte size: shape check passes, dtype check must not.
  const fs::path file = other / "model.safetensors";
  std::string bytes = ReadFile(file);
  const std::string needle = R"("model.norm.weight":{"dtype":"F32")";
  const std::size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, needle.size(), R"("model.norm.weight":{"dtype":"I32")");
  WriteFile(file, bytes);
  ExpectLoadError(other.path(), "has dtype I32; expected F32, F16 or BF16", file);
}

}  // namespace
}  // namespace accllm
