#include "runtime/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/common/aligned_buffer.h"
#include "runtime/common/status_macros.h"

namespace accllm {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4},  {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},    {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4},  {DType::kU16, "U16", 2},  {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

// The header of a real checkpoint is a few hundred KB; anything this large is corrupt.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
constexpr std::size_t kDataAlignment = 64;

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": invalid safetensors file: ", what));
}

}  // namespace

std::optional<DType> ParseDType(const std::string& name) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) return info.dtype;
  }
  return std::nullopt;
}

const char* DTypeName(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info.name;
  }
  return "?";
}

std::size_t DTypeSize(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info.size;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path,
                                                                       LoadMode mode) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path, mode));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> parsed, Parse(path, file->bytes()));
  parsed->file_ = std::move(file);
  return parsed;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    const std::string& path, std::span<const std::byte> bytes) {
  if (bytes.size() < 8) return Bad(path, absl::StrCat("file is ", bytes.size(), " bytes, too short for the 8-byte header length"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian host (x86-64)
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    return Bad(path, absl::StrCat("header length ", header_len, " exceeds the file (", bytes.size(),
                                  " bytes)"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  const nlohmann::json header =
      nlohmann::json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return Bad(path, "header is not valid JSON");
  if (!header.is_object()) return Bad(path, "header is not a JSON object");

  auto result = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  result->path_ = path;
  result->file_size_ = bytes.size();
  const std::span<const std::byte> data = bytes.subspan(8 + header_len);

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Bad(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return Bad(path, absl::StrCat("__metadata__.", key, " is not a string"));
        result->metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "': ");
    if (!entry.is_object()) return Bad(path, where + "entry is not an object");
    const auto dtype_it = entry.find("dtype");
    const auto shape_it = entry.find("shape");
    const auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return Bad(path, where + "missing string 'dtype'");
    if (shape_it == entry.end() || !shape_it->is_array()) return Bad(path, where + "missing array 'shape'");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return Bad(path, where + "'data_offsets' must be an array of two integers");
    }
    const std::optional<DType> dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype) return Bad(path, where + "unknown dtype '" + dtype_it->get<std::string>() + "'");

    SafetensorsTensor tensor{name, *dtype, {}, {}};
    uint64_t elements = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned()) return Bad(path, where + "shape entries must be non-negative integers");
      const uint64_t d = dim.get<uint64_t>();
      if (d > (uint64_t{1} << 40) || __builtin_mul_overflow(elements, d, &elements)) {
        return Bad(path, where + "shape is too large");
      }
      tensor.shape.push_back(static_cast<int64_t>(d));
    }
    if (!(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return Bad(path, where + "'data_offsets' must be non-negative integers");
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end || end > data.size()) {
      return Bad(path, absl::StrCat(where, "data_offsets [", begin, ", ", end,
                                    ") fall outside the data section of ", data.size(), " bytes"));
    }
    uint64_t expected_bytes = 0;
    if (__builtin_mul_overflow(elements, DTypeSize(*dtype), &expected_bytes) ||
        expected_bytes != end - begin) {
      return Bad(path, absl::StrCat(where, "shape and dtype need ", expected_bytes,
                                    " bytes but data_offsets span ", end - begin));
    }
    tensor.data = data.subspan(begin, end - begin);
    result->tensors_.push_back(std::move(tensor));
  }

  // Tensors must not overlap (the format also forbids holes, which we tolerate on read).
  std::vector<const SafetensorsTensor*> by_offset;
  for (const auto& t : result->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->data.data() < b->data.data(); });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    if (prev->data.data() + prev->data.size() > by_offset[i]->data.data()) {
      return Bad(path, absl::StrCat("tensors '", prev->name, "' and '", by_offset[i]->name, "' overlap"));
    }
  }
  for (std::size_t i = 0; i < result->tensors_.size(); ++i) result->index_[result->tensors_[i].name] = i;
  return result;
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    uint64_t bytes = DTypeSize(t.dtype);
    for (int64_t d : t.shape) bytes *= static_cast<uint64_t>(d);
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string header_text = header.dump();
  const std::size_t padded = (8 + header_text.size() + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
  header_text.append(padded - 8 - header_text.size(), ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::FailedPreconditionError(absl::StrCat(path, ": cannot open for writing"));
  const uint64_t header_len = header_text.size();
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    AlignedBuffer buffer(sizes[i]);
    if (buffer.size() != sizes[i]) {
      return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot allocate ", sizes[i], " bytes"));
    }
    RETURN_IF_ERROR(tensors[i].fill(buffer.bytes()));
    out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(sizes[i]));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace accllm
