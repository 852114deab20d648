// accllm-server's config file (TOML or INI, parsed by CLI11) and the option checks after it:
// any file is either a set of options the server can run with or a clear error.
#include "server/server_flags.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  accllm::fuzz::InputFile file(data, size);
  (void)accllm::server::ParseServerFlags({"--config", file.path()});
  return 0;
}
