// accllm-xclbin: writes the emulation xclbin of the design in a v++ link configuration.
//   accllm-xclbin --config fpga/build/u280.cfg -o accllm_noop.xclbin
#include <cstdio>
#include <fstream>
#include <sstream>

#include "CLI/CLI.hpp"
#include "fpga/host/link_config_check.h"
#include "fpga/host/xclbin_writer.h"

int main(int argc, char** argv) {
  std::string config_path, output;
  CLI::App app{"accllm-xclbin: an xclbin (no bitstream) for XRT emulation, from a v++ link configuration"};
  app.add_option("--config", config_path, "v++ link configuration (fpga/build/u280.cfg)")->required();
  app.add_option("-o,--output", output, "xclbin to write")->required();
  CLI11_PARSE(app, argc, argv);
  std::ifstream in(config_path);
  if (!in) {
    std::fprintf(stderr, "accllm-xclbin: error: cannot read '%s'\n", config_path.c_str());
    return 1;
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<accllm::fpga::XclbinDesign> design = accllm::fpga::ParseLinkConfig(text.str());
  if (design.ok()) {
    if (const absl::Status linkable = accllm::fpga::CheckU280LinkConfig(*design); !linkable.ok()) design = linkable;
  }
  absl::StatusOr<std::string> bytes = design.ok() ? accllm::fpga::BuildXclbin(*design) : design.status();
  if (!bytes.ok()) {
    std::fprintf(stderr, "accllm-xclbin: error: %s\n", std::string(bytes.status().message()).c_str());
    return 1;
  }
  std::ofstream out(output, std::ios::binary);
  out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
  if (!out) {
    std::fprintf(stderr, "accllm-xclbin: error: cannot write '%s'\n", output.c_str());
    return 1;
  }
  std::fprintf(stderr, "accllm-xclbin: %zu compute units, %zu bytes -> %s\n", design->units.size(), bytes->size(),
               output.c_str());
  return 0;
}
