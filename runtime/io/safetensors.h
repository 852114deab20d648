// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the tensor bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/io/mapped_file.h"

namespace accllm {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool };

std::optional<DType> ParseDType(const std::string& name);
const char* DTypeName(DType dtype);
std::size_t DTypeSize(DType dtype);

struct SafetensorsTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // points into the file's bytes
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path,
                                                               LoadMode mode = LoadMode::kMap);
  // Parses `bytes` (which must outlive the result); `path` is only used in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(const std::string& path,
                                                                std::span<const std::byte> bytes);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* Find(const std::string& name) const;
  std::size_t file_size() const { return file_size_; }

 private:
  std::string path_;
  std::unique_ptr<MappedFile> file_;  // null when parsed from caller-owned bytes
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::size_t file_size_ = 0;
};

// One tensor for WriteSafetensors. `fill` receives the tensor's bytes to write in place.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::function<absl::Status(std::span<std::byte>)> fill;
};

// Writes tensors in the given order with no holes between them; the header is padded with spaces
// so that the data section starts 64-byte aligned. Streams: one tensor in memory at a time.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace accllm
