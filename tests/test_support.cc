#include "tests/test_support.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace accllm::testing {

namespace fs = std::filesystem;

fs::path SharedDir() {
  if (const char* env = std::getenv("ACCLLM_SHARED_DIR"); env && *env) return env;
  return fs::path(ACCLLM_SOURCE_DIR).parent_path() / "shared";
}

fs::path ModelsDir() {
  if (const char* env = std::getenv("ACCLLM_MODELS_DIR"); env && *env) return env;
  return SharedDir() / "models";
}

fs::path RequireModelFile(const std::string& name) {
  const fs::path path = ModelsDir() / name;
  if (!fs::exists(path)) {
    ADD_FAILURE() << "test model file not found: " << path
                  << " (set ACCLLM_MODELS_DIR to the folder holding stories260K.bin and tok512.*)";
  }
  return path;
}

fs::path RequireSharedFile(const std::string& relative) {
  const fs::path path = SharedDir() / relative;
  if (!fs::exists(path)) {
    ADD_FAILURE() << "shared file not found: " << path << " (set ACCLLM_SHARED_DIR)";
  }
  return path;
}

LlamaConfig TinyConfig(bool shared_classifier) {
  LlamaConfig c;
  c.dim = 16;
  c.hidden_dim = 40;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 32;
  c.max_seq_len = 8;
  c.shared_classifier = shared_classifier;
  return c;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    ASSERT_EQ(a, b) << "element " << i << ": " << got[i] << " vs " << want[i];
  }
}

ScratchDir::ScratchDir() {
  std::string pattern = (fs::temp_directory_path() / "accllm-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) std::abort();
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace accllm::testing
