// Shared helpers for the tests: where the shared models live, and scratch directories.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/kernels.h"
#include "runtime/model/llama_config.h"

namespace accllm::testing {

// $ACCLLM_MODELS_DIR, else ../shared/models beside the source tree.
std::filesystem::path ModelsDir();
// $ACCLLM_SHARED_DIR, else ../shared beside the source tree.
std::filesystem::path SharedDir();

// The path of a file under ModelsDir() (or SharedDir() for RequireSharedFile); fails the current
// test with a message naming the missing path when it is absent.
std::filesystem::path RequireModelFile(const std::string& name);
std::filesystem::path RequireSharedFile(const std::string& relative);

// A tiny model shape with grouped-query attention (dim 16, 2 layers, 4 heads, 2 kv heads,
// vocab 32, context 8) for format tests.
LlamaConfig TinyConfig(bool shared_classifier);

std::string ReadFile(const std::filesystem::path& path);
void WriteFile(const std::filesystem::path& path, const std::string& bytes);

// Fails (once, naming the first element that differs) unless got and want hold the same bits.
void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want);

// The CPU kernel tables this machine can run (scalar always), in kAllCpuPaths' order.
inline std::vector<const CpuKernels*> AvailableKernels() {
  std::vector<const CpuKernels*> out;
  for (CpuPath p : kAllCpuPaths) {
    if (auto k = KernelsFor(p); k.ok()) out.push_back(*k);
  }
  return out;
}

// A fresh directory removed when the object goes away.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace accllm::testing

// Fails the test (fatally) when a StatusOr is not OK, showing the status; yields the value.
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                                       \
  auto ACCLLM_TEST_CONCAT(statusor_, __LINE__) = (expr);                      \
  ASSERT_TRUE(ACCLLM_TEST_CONCAT(statusor_, __LINE__).ok())                   \
      << ACCLLM_TEST_CONCAT(statusor_, __LINE__).status();                    \
  lhs = std::move(ACCLLM_TEST_CONCAT(statusor_, __LINE__)).value()
#define ACCLLM_TEST_CONCAT_INNER(a, b) a##b
#define ACCLLM_TEST_CONCAT(a, b) ACCLLM_TEST_CONCAT_INNER(a, b)
#define ASSERT_OK(expr)                      \
  do {                                       \
    const ::absl::Status s_ = (expr);        \
    ASSERT_TRUE(s_.ok()) << s_;              \
  } while (0)
