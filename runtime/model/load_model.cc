#include "runtime/model/load_model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/model/hf_checkpoint.h"
#include "runtime/model/llama2c_format.h"

namespace accllm {

namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) return absl::NotFoundError(absl::StrCat(path, ": model not found"));
  if (fs::is_directory(status)) return LoadHfCheckpoint(path, options);
  if (fs::path(path).extension() == ".safetensors") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": pass the checkpoint directory (with config.json), not a .safetensors file"));
  }
  return LoadLlama2cModel(path, options);
}

absl::StatusOr<std::string> DefaultTokenizerPath(const std::string& model_path, int vocab_size) {
  std::vector<fs::path> candidates;
  if (fs::is_directory(model_path)) {
    candidates.push_back(fs::path(model_path) / "tokenizer.model");
  } else {
    const fs::path dir = fs::path(model_path).parent_path();
    const std::string vocab = absl::StrCat(vocab_size);
    for (const std::string& name : {std::string("tokenizer.bin"), std::string("tokenizer.model"),
                                   "tok" + vocab + ".bin", "tok" + vocab + ".model"}) {
      candidates.push_back(dir / name);
    }
  }
  std::vector<std::string> tried;
  for (const fs::path& p : candidates) {
    if (fs::is_regular_file(p)) return p.string();
    tried.push_back(p.string());
  }
  return absl::NotFoundError(absl::StrCat("no tokenizer found for ", model_path, " (tried ",
                                          absl::StrJoin(tried, ", "), "); pass one with -t"));
}

}  // namespace accllm
