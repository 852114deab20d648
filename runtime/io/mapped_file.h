// A read-only view of a whole file: memory-mapped (default) or read into anonymous memory.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/common/aligned_buffer.h"

namespace accllm {

enum class LoadMode {
  kMap,        // mmap the file: instant start, pages shared with the page cache.
  kAnonymous,  // read into private memory: immune to page-cache eviction (use for benchmarks).
};

const char* LoadModeName(LoadMode mode);

class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path,
                                                          LoadMode mode = LoadMode::kMap);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  const std::byte* data() const { return data_; }

 private:
  MappedFile() = default;

  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when mmapped
  AlignedBuffer buffer_;     // used in kAnonymous mode
};

}  // namespace accllm
