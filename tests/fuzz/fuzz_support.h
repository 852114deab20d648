// What the libFuzzer targets share: the input as a file (the loaders take paths; a memfd keeps
// it in memory), and the test models, found like the tests find them.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace accllm::fuzz {

// The fuzzer's bytes behind a path, for as long as this object lives.
class InputFile {
 public:
  InputFile(const uint8_t* data, std::size_t size) : fd_(memfd_create("fuzz-input", 0)) {
    std::size_t done = 0;
    while (fd_ >= 0 && done < size) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) std::abort();
      done += static_cast<std::size_t>(n);
    }
  }
  ~InputFile() {
    if (fd_ >= 0) close(fd_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

// $ACCLLM_MODELS_DIR, else ../shared/models beside the source tree.
inline std::string ModelsDir() {
  if (const char* dir = std::getenv("ACCLLM_MODELS_DIR")) return dir;
  return std::string(ACCLLM_SOURCE_DIR) + "/../shared/models";
}

}  // namespace accllm::fuzz
