#include "runtime/model/llama2c_format.h"

#include <cmath>
#include <climits>
#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace accllm {
namespace {

constexpr uint32_t kMagic = 0x616b3432;  // "ak42" read as a little-endian uint32
constexpr std::size_t kV1HeaderBytes = 256;
constexpr std::size_t kLegacyHeaderBytes = 7 * sizeof(int32_t);

// One run of tensors in file order: a single tensor, or one per layer stacked back to back.
// `kind == nullopt` is the legacy format's unused RoPE table (freq_cis_real and _imag).
struct Block {
  std::optional<TensorKind> kind;
};

std::vector<Block> FileOrder(const LlamaConfig& c, Llama2cVersion version) {
  using K = TensorKind;
  std::vector<Block> order;
  if (version == Llama2cVersion::kLegacy) {
    order = {{K::kTokenEmbedding}, {K::kAttnNorm}, {K::kWq}, {K::kWk}, {K::kWv}, {K::kWo},
             {K::kFfnNorm}, {K::kW1}, {K::kW2}, {K::kW3}, {K::kFinalNorm}, {std::nullopt}};
  } else {
    order = {{K::kAttnNorm}, {K::kFfnNorm}, {K::kFinalNorm}, {K::kTokenEmbedding}, {K::kWq},
             {K::kWk}, {K::kWv}, {K::kWo}, {K::kW1}, {K::kW2}, {K::kW3}};
  }
  if (!c.shared_classifier) order.push_back({K::kClassifier});
  return order;
}

uint64_t BlockElements(const LlamaConfig& c, const Block& b) {
  if (!b.kind) return uint64_t(c.max_seq_len) * uint64_t(c.head_size());  // real + imag halves
  const uint64_t n = static_cast<uint64_t>(TensorElements(c, *b.kind));
  return IsPerLayer(*b.kind) ? n * static_cast<uint64_t>(c.n_layers) : n;
}

uint64_t ExpectedFileBytes(const LlamaConfig& c, Llama2cVersion version) {
  uint64_t floats = 0;
  for (const Block& b : FileOrder(c, version)) floats += BlockElements(c, b);
  const uint64_t header = version == Llama2cVersion::kV1 ? kV1HeaderBytes : kLegacyHeaderBytes;
  return header + floats * sizeof(float);
}

int32_t ReadI32(const std::byte* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

bool HasLlama2cMagic(std::span<const std::byte> bytes) {
  if (bytes.size() < 4) return false;
  uint32_t magic;
  std::memcpy(&magic, bytes.data(), 4);
  return magic == kMagic;
}

absl::StatusOr<std::unique_ptr<Model>> LoadLlama2cModel(const std::string& path, const LoadOptions& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path, options.mode));
  const std::span<const std::byte> bytes = file->bytes();
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid llama2.c model: ", what));
  };

  auto model = std::make_unique<Model>();
  model->path = path;
  model->load_options = options;
  model->file_bytes = static_cast<int64_t>(bytes.size());
  LlamaConfig& c = model->config;
  Llama2cVersion version;
  const std::byte* params;
  if (HasLlama2cMagic(bytes)) {
    if (bytes.size() < kV1HeaderBytes) return bad(absl::StrCat("file is ", bytes.size(), " bytes, shorter than the 256-byte header"));
    const int32_t file_version = ReadI32(bytes.data() + 4);
    if (file_version != 1) {
      return bad(absl::StrCat("unsupported version ", file_version,
                              " (only version 1, fp32, is supported; re-export with --version 1)"));
    }
    version = Llama2cVersion::kV1;
    model->format = ModelFormat::kLlama2cV1;
    params = bytes.data() + 8;
    const uint8_t shared = static_cast<uint8_t>(bytes[8 + kLegacyHeaderBytes]);
    if (shared > 1) return bad(absl::StrCat("shared_classifier flag is ", int{shared}, ", expected 0 or 1"));
    c.shared_classifier = shared == 1;
  } else {
    if (bytes.size() < kLegacyHeaderBytes) return bad(absl::StrCat("file is ", bytes.size(), " bytes, shorter than the 28-byte header"));
    version = Llama2cVersion::kLegacy;
    model->format = ModelFormat::kLlama2cLegacy;
    params = bytes.data();
  }
  c.dim = ReadI32(params);
  c.hidden_dim = ReadI32(params + 4);
  c.n_layers = ReadI32(params + 8);
  c.n_heads = ReadI32(params + 12);
  c.n_kv_heads = ReadI32(params + 16);
  c.vocab_size = ReadI32(params + 20);
  c.max_seq_len = ReadI32(params + 24);
  if (version == Llama2cVersion::kLegacy) {
    // The legacy format marks an unshared classifier with a negative vocabulary size.
    c.shared_classifier = c.vocab_size > 0;
    if (c.vocab_size < 0 && c.vocab_size != INT32_MIN) c.vocab_size = -c.vocab_size;
  }
  if (absl::Status s = ValidateConfig(c); !s.ok()) return bad(absl::StrCat("header: ", s.message()));

  const uint64_t expected = ExpectedFileBytes(c, version);
  if (bytes.size() != expected) {
    return bad(absl::StrCat("the header (dim ", c.dim, ", hidden_dim ", c.hidden_dim, ", n_layers ",
                            c.n_layers, ", n_heads ", c.n_heads, ", n_kv_heads ", c.n_kv_heads,
                            ", vocab ", c.vocab_size, ", seq_len ", c.max_seq_len, ", ",
                            c.shared_classifier ? "shared" : "separate", " classifier) needs ",
                            expected, " bytes but the file has ", bytes.size(),
                            bytes.size() < expected ? " (truncated?)" : ""));
  }

  // Walk the file in order, pointing each tensor into the mapping (cf. run.c's
  // memory_map_weights). Offsets are multiples of 4 from a page-aligned base.
  const float* ptr = reinterpret_cast<const float*>(
      bytes.data() + (version == Llama2cVersion::kV1 ? kV1HeaderBytes : kLegacyHeaderBytes));
  for (const Block& block : FileOrder(c, version)) {
    if (!block.kind) {
      ptr += BlockElements(c, block);
      continue;
    }
    const int64_t n = TensorElements(c, *block.kind);
    const int layers = IsPerLayer(*block.kind) ? c.n_layers : 1;
    for (int l = 0; l < layers; ++l) {
      const TensorId id{*block.kind, IsPerLayer(*block.kind) ? l : -1};
      model->SetTensor(id, ptr);
      model->tensors.push_back({id, "F32", n * 4});
      ptr += n;
    }
  }
  if (c.shared_classifier) model->weights.classifier = model->weights.token_embedding;
  model->storage.push_back(std::move(file));
  return model;
}

absl::Status WriteLlama2cModel(const WeightSource& source, const std::string& path,
                               Llama2cVersion version) {
  const LlamaConfig& c = source.config();
  RETURN_IF_ERROR(ValidateConfig(c));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::FailedPreconditionError(absl::StrCat(path, ": cannot open for writing"));
  const auto write = [&out](const void* p, std::size_t n) {
    out.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
  };

  const int32_t vocab = (version == Llama2cVersion::kLegacy && !c.shared_classifier) ? -c.vocab_size : c.vocab_size;
  const int32_t params[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.max_seq_len};
  if (version == Llama2cVersion::kV1) {
    std::vector<std::byte> header(kV1HeaderBytes);
    const int32_t file_version = 1;
    std::memcpy(header.data(), &kMagic, 4);
    std::memcpy(header.data() + 4, &file_version, 4);
    std::memcpy(header.data() + 8, params, sizeof params);
    header[8 + sizeof params] = std::byte{c.shared_classifier ? uint8_t{1} : uint8_t{0}};
    write(header.data(), header.size());
  } else {
    write(params, sizeof params);
  }

  std::vector<float> buffer;
  for (const Block& block : FileOrder(c, version)) {
    if (!block.kind) {
      // The legacy RoPE table, as llama2.c's precompute_freqs_cis made it: cos then sin.
      const int half = c.head_size() / 2;
      buffer.assign(static_cast<std::size_t>(c.max_seq_len) * half * 2, 0.0f);
      for (int pos = 0; pos < c.max_seq_len; ++pos) {
        for (int i = 0; i < half; ++i) {
          const float freq = 1.0f / std::pow(c.rope_theta, static_cast<float>(2 * i) / c.head_size());
          buffer[static_cast<std::size_t>(pos) * half + i] = std::cos(pos * freq);
          buffer[static_cast<std::size_t>(c.max_seq_len + pos) * half + i] = std::sin(pos * freq);
        }
      }
      write(buffer.data(), buffer.size() * sizeof(float));
      continue;
    }
    buffer.resize(static_cast<std::size_t>(TensorElements(c, *block.kind)));
    const int layers = IsPerLayer(*block.kind) ? c.n_layers : 1;
    for (int l = 0; l < layers; ++l) {
      source.Fill({*block.kind, IsPerLayer(*block.kind) ? l : -1}, buffer);
      write(buffer.data(), buffer.size() * sizeof(float));
    }
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace accllm
