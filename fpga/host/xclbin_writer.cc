#include "fpga/host/xclbin_writer.h"

#include <xrt/xclbin.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "fpga/host/kernel_signatures.h"
#include "runtime/common/status_macros.h"

namespace accllm::fpga {
namespace {

constexpr uint64_t kHbmBankBytes = 256ull << 20;
constexpr uint64_t kDdrBankBytes = 16ull << 30;
constexpr uint64_t kPlramBytes = 128ull << 10;
constexpr uint64_t kFirstCuAddress = 0x1800000;
constexpr uint64_t kCuAddressStep = 0x10000;

template <typename T>
void Append(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void PadTo8(std::string& s) { s.resize((s.size() + 7) / 8 * 8, '\0'); }

int MemoryIndex(const std::string& tag) {
  const std::vector<std::string> tags = U280MemoryTags();
  const auto it = std::find(tags.begin(), tags.end(), tag);
  return it == tags.end() ? -1 : static_cast<int>(it - tags.begin());
}

// The AXI-Lite register offset of each argument: HLS puts arguments from 0x10, 64-bit pointers
// and scalars in 12-byte slots, 32-bit scalars in 8-byte slots; streams have none (0).
std::vector<int> RegisterOffsets(const KernelSignature& k) {
  std::vector<int> offsets;
  int offset = 0x10;
  for (const KernelArg& a : k.args) {
    offsets.push_back(a.is_stream() ? 0 : offset);
    if (!a.is_stream()) offset += a.bytes == 8 ? 12 : 8;
  }
  return offsets;
}

// An argument's XML: a buffer (addressQualifier 1) on its master's port, a scalar (0) in the
// control registers, a stream (4) on an AXI4-Stream port of its own name.
std::string ArgXml(const KernelArg& a, std::size_t id, int offset) {
  if (a.is_stream()) {
    return absl::StrFormat(
        "          <arg name=\"%s\" addressQualifier=\"4\" id=\"%d\" port=\"%s\" size=\"0x0\" offset=\"0x0\" "
        "hostOffset=\"0x0\" hostSize=\"0x0\" type=\"stream<unit_command>&\"/>\n",
        a.name, id, a.name);
  }
  return absl::StrFormat(
      "          <arg name=\"%s\" addressQualifier=\"%d\" id=\"%d\" port=\"%s\" size=\"0x%x\" offset=\"0x%x\" "
      "hostOffset=\"0x0\" hostSize=\"0x%x\" type=\"%s\"/>\n",
      a.name, a.buffer ? 1 : 0, id, a.buffer ? "M_AXI_" + absl::AsciiStrToUpper(a.bundle) : "S_AXI_CONTROL", a.bytes,
      offset, a.bytes, a.buffer ? "void*" : a.bytes == 8 ? "unsigned long" : "int");
}

std::string KernelXml(const KernelSignature& k, const std::vector<const ComputeUnit*>& units,
                      const std::map<const ComputeUnit*, uint64_t>& base) {
  std::string xml = absl::StrFormat(
      "        <kernel name=\"%s\" language=\"c\" vlnv=\"xilinx.com:hls:%s:1.0\" preferredWorkGroupSizeMultiple=\"0\" "
      "workGroupSize=\"1\" interrupt=\"true\" hwControlProtocol=\"ap_ctrl_hs\">\n",
      k.name, k.name);
  xml += "          <port name=\"S_AXI_CONTROL\" mode=\"slave\" range=\"0x1000\" dataWidth=\"32\" portType=\"addressable\" base=\"0x0\"/>\n";
  std::set<std::string> bundles;
  for (const KernelArg& a : k.args) {
    if (a.buffer && bundles.insert(a.bundle).second) {
      xml += absl::StrFormat(
          "          <port name=\"M_AXI_%s\" mode=\"master\" range=\"0xFFFFFFFFFFFFFFFF\" dataWidth=\"512\" "
          "portType=\"addressable\" base=\"0x0\"/>\n",
          absl::AsciiStrToUpper(a.bundle));
    }
  }
  for (const KernelArg& a : k.args) {
    if (a.is_stream()) {
      xml += absl::StrFormat(
          "          <port name=\"%s\" mode=\"%s\" dataWidth=\"%d\" portType=\"stream\"/>\n", a.name,
          a.stream == StreamDirection::kIn ? "read_only" : "write_only", 8 * a.bytes);
    }
  }
  const std::vector<int> offsets = RegisterOffsets(k);
  for (std::size_t i = 0; i < k.args.size(); ++i) xml += ArgXml(k.args[i], i, offsets[i]);
  for (const ComputeUnit* u : units) {
    xml += absl::StrFormat("          <instance name=\"%s\">\n            <addrRemap base=\"0x%x\" port=\"S_AXI_CONTROL\"/>\n"
                           "          </instance>\n",
                           u->instance, base.at(u));
  }
  return xml + "        </kernel>\n";
}

}  // namespace

std::vector<std::string> U280MemoryTags() {
  std::vector<std::string> tags;
  for (int i = 0; i < 32; ++i) tags.push_back(absl::StrCat("HBM[", i, "]"));
  for (int i = 0; i < 2; ++i) tags.push_back(absl::StrCat("DDR[", i, "]"));
  for (int i = 0; i < 6; ++i) tags.push_back(absl::StrCat("PLRAM[", i, "]"));
  return tags;
}

namespace {

// "HBM[3]", "HBM[24:27]" or "HBM[28:29].29".
absl::StatusOr<MemoryBinding> ParseBinding(const std::string& text) {
  MemoryBinding b;
  const std::size_t open = text.find('['), close = text.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return absl::InvalidArgumentError(absl::StrCat("bad memory '", text, "'"));
  }
  b.type = text.substr(0, open);
  const std::string range = text.substr(open + 1, close - open - 1), tail = text.substr(close + 1);
  const std::vector<std::string> ends = absl::StrSplit(range, ':');
  if (ends.size() > 2 || !absl::SimpleAtoi(ends[0], &b.first) ||
      !absl::SimpleAtoi(ends.size() == 2 ? ends[1] : ends[0], &b.last) ||
      (!tail.empty() && (tail[0] != '.' || !absl::SimpleAtoi(tail.substr(1), &b.port)))) {
    return absl::InvalidArgumentError(absl::StrCat("bad memory '", text, "'"));
  }
  return b;
}

}  // namespace

std::string FirstBank(const MemoryBinding& b) { return absl::StrCat(b.type, "[", b.first, "]"); }

absl::StatusOr<XclbinDesign> ParseLinkConfig(const std::string& cfg_text) {
  XclbinDesign design;
  std::map<std::string, ComputeUnit*> by_instance;
  int line_number = 0;
  // Lines that name units, read once every nk= line is known.
  std::vector<std::pair<int, std::string>> sp_lines, sc_lines, clock_lines, slr_lines;
  std::string section;
  for (absl::string_view raw : absl::StrSplit(cfg_text, '\n')) {
    ++line_number;
    const std::string line(absl::StripAsciiWhitespace(raw));
    if (absl::StartsWith(line, "[")) {
      section = line;
    } else if (absl::StartsWith(line, "nk=")) {
      // nk=kernel:count:inst1.inst2...
      std::vector<std::string> parts = absl::StrSplit(line.substr(3), ':');
      int count = 0;
      if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &count) || FindKernel(parts[0]) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("link config line ", line_number, ": bad nk= '", line, "'"));
      }
      std::vector<std::string> names = absl::StrSplit(parts[2], '.');
      if (static_cast<int>(names.size()) != count) {
        return absl::InvalidArgumentError(
            absl::StrCat("link config line ", line_number, ": ", count, " units but ", names.size(), " names"));
      }
      for (const std::string& n : names) design.units.push_back({parts[0], n, {}, 0, ""});
    } else if (absl::StartsWith(line, "sp=")) {
      sp_lines.emplace_back(line_number, line.substr(3));
    } else if (absl::StartsWith(line, "sc=") || absl::StartsWith(line, "stream_connect=")) {
      sc_lines.emplace_back(line_number, line.substr(line.find('=') + 1));
    } else if (absl::StartsWith(line, "slr=")) {
      slr_lines.emplace_back(line_number, line.substr(4));
    } else if (section == "[clock]" && absl::StartsWith(line, "freqHz=")) {
      clock_lines.emplace_back(line_number, line.substr(7));
    }
  }
  for (ComputeUnit& u : design.units) {
    if (!by_instance.emplace(u.instance, &u).second) {
      return absl::InvalidArgumentError(absl::StrCat("link config: two units named '", u.instance, "'"));
    }
  }
  const auto unit = [&](int number, const std::string& instance) -> absl::StatusOr<ComputeUnit*> {
    auto it = by_instance.find(instance);
    if (it == by_instance.end()) {
      return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": unknown unit '", instance, "'"));
    }
    return it->second;
  };
  for (const auto& [number, sp] : sp_lines) {
    // sp=instance.arg:BANK[i], BANK[i:j] or BANK[i:j].port
    const std::size_t dot = sp.find('.'), colon = sp.find(':');
    if (dot == std::string::npos || colon == std::string::npos || colon < dot) {
      return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": bad sp= '", sp, "'"));
    }
    const std::string instance = sp.substr(0, dot), arg = sp.substr(dot + 1, colon - dot - 1);
    ASSIGN_OR_RETURN(ComputeUnit* const u, unit(number, instance));
    const KernelSignature& k = *FindKernel(u->kernel);
    if (ArgIndex(k, arg) < 0 || !k.args[ArgIndex(k, arg)].buffer) {
      return absl::InvalidArgumentError(
          absl::StrCat("link config line ", number, ": ", k.name, " has no buffer argument '", arg, "'"));
    }
    const absl::StatusOr<MemoryBinding> binding = ParseBinding(sp.substr(colon + 1));
    if (!binding.ok() || MemoryIndex(FirstBank(*binding)) < 0 || binding->last < binding->first ||
        MemoryIndex(absl::StrCat(binding->type, "[", binding->last, "]")) < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("link config line ", number, ": unknown memory '", sp.substr(colon + 1), "'"));
    }
    u->bindings[arg] = *binding;
  }
  for (const auto& sc_line : sc_lines) {
    // sc=from_unit.port:to_unit.port[:depth], the first an output stream, the second an input.
    // (Not a structured binding: clang 14 cannot capture one in the lambda below.)
    const int number = sc_line.first;
    const std::string& sc = sc_line.second;
    const std::vector<std::string> parts = absl::StrSplit(sc, ':');
    StreamConnection c;
    const auto end = [&](const std::string& text, StreamDirection direction, std::string& instance,
                         std::string& port) -> absl::Status {
      const std::size_t dot = text.find('.');
      if (dot == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": bad sc= '", sc, "'"));
      }
      instance = text.substr(0, dot);
      port = text.substr(dot + 1);
      ASSIGN_OR_RETURN(ComputeUnit* const u, unit(number, instance));
      const KernelSignature& k = *FindKernel(u->kernel);
      const int i = ArgIndex(k, port);
      if (i < 0 || k.args[i].stream != direction) {
        return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": ", k.name, " has no ",
                                                       direction == StreamDirection::kOut ? "output" : "input",
                                                       " stream '", port, "'"));
      }
      return absl::OkStatus();
    };
    const bool depth_ok = parts.size() == 2 || (parts.size() == 3 && absl::SimpleAtoi(parts[2], &c.depth) && c.depth >= 1);
    if (!depth_ok) {
      return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": bad sc= '", sc, "'"));
    }
    RETURN_IF_ERROR(end(parts[0], StreamDirection::kOut, c.from_unit, c.from_port));
    RETURN_IF_ERROR(end(parts[1], StreamDirection::kIn, c.to_unit, c.to_port));
    design.streams.push_back(c);
  }
  for (const auto& [number, text] : clock_lines) {
    // freqHz=hz:instance
    const std::vector<std::string> parts = absl::StrSplit(text, ':');
    int64_t hz = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &hz) || hz <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": bad freqHz= '", text, "'"));
    }
    ASSIGN_OR_RETURN(ComputeUnit* const u, unit(number, parts[1]));
    u->clock_hz = hz;
  }
  for (const auto& [number, text] : slr_lines) {
    const std::vector<std::string> parts = absl::StrSplit(text, ':');
    if (parts.size() != 2) return absl::InvalidArgumentError(absl::StrCat("link config line ", number, ": bad slr= '", text, "'"));
    ASSIGN_OR_RETURN(ComputeUnit* const u, unit(number, parts[0]));
    u->slr = parts[1];
  }
  for (const ComputeUnit& u : design.units) {
    for (const KernelArg& a : FindKernel(u.kernel)->args) {
      if (a.buffer && !u.bindings.contains(a.name)) {
        return absl::InvalidArgumentError(absl::StrCat("link config: ", u.instance, ".", a.name, " has no sp= bank"));
      }
    }
  }
  if (design.units.empty()) return absl::InvalidArgumentError("link config: no nk= lines");
  return design;
}

absl::StatusOr<std::string> BuildXclbin(const XclbinDesign& design) {
  const std::vector<std::string> tags = U280MemoryTags();
  std::set<int> used_banks;
  for (const ComputeUnit& u : design.units) {
    for (const auto& [arg, binding] : u.bindings) used_banks.insert(MemoryIndex(FirstBank(binding)));
  }

  // MEM_TOPOLOGY (4 bytes of padding after the count).
  std::string mem;
  Append(mem, static_cast<int32_t>(tags.size()));
  Append(mem, int32_t{0});
  uint64_t hbm_base = 0, ddr_base = 0x4000000000ull, plram_base = 0x4100000000ull;
  for (std::size_t i = 0; i < tags.size(); ++i) {
    mem_data m{};
    m.m_type = absl::StartsWith(tags[i], "PLRAM") ? MEM_DRAM : absl::StartsWith(tags[i], "HBM") ? MEM_HBM : MEM_DDR4;
    m.m_used = used_banks.contains(static_cast<int>(i)) ? 1 : 0;
    const uint64_t bytes = absl::StartsWith(tags[i], "HBM") ? kHbmBankBytes
                           : absl::StartsWith(tags[i], "DDR") ? kDdrBankBytes
                                                              : kPlramBytes;
    uint64_t& base = absl::StartsWith(tags[i], "HBM") ? hbm_base : absl::StartsWith(tags[i], "DDR") ? ddr_base : plram_base;
    m.m_size = bytes / 1024;
    m.m_base_address = base;
    base += bytes;
    std::strncpy(reinterpret_cast<char*>(m.m_tag), tags[i].c_str(), sizeof(m.m_tag) - 1);
    Append(mem, m);
  }

  // IP_LAYOUT (sorted by base address; 4 bytes of padding after the count) and CONNECTIVITY.
  std::string ips, connectivity;
  Append(ips, static_cast<int32_t>(design.units.size()));
  Append(ips, int32_t{0});
  std::map<const ComputeUnit*, uint64_t> base;
  std::vector<connection> connections;
  for (std::size_t i = 0; i < design.units.size(); ++i) {
    const ComputeUnit& u = design.units[i];
    ip_data ip{};
    ip.m_type = IP_KERNEL;
    ip.properties = (AP_CTRL_HS << IP_CONTROL_SHIFT) | IP_INT_ENABLE_MASK |
                    ((static_cast<uint32_t>(i) << IP_INTERRUPT_ID_SHIFT) & IP_INTERRUPT_ID_MASK);
    ip.m_base_address = kFirstCuAddress + i * kCuAddressStep;
    base[&u] = ip.m_base_address;
    const std::string name = u.kernel + ":" + u.instance;
    if (name.size() >= sizeof(ip.m_name)) return absl::InvalidArgumentError("compute unit name too long: " + name);
    std::memcpy(ip.m_name, name.c_str(), name.size());
    Append(ips, ip);
    const KernelSignature& k = *FindKernel(u.kernel);
    for (std::size_t a = 0; a < k.args.size(); ++a) {
      if (!k.args[a].buffer) continue;
      connections.push_back({static_cast<int32_t>(a), static_cast<int32_t>(i), MemoryIndex(FirstBank(u.bindings.at(k.args[a].name)))});
    }
  }
  Append(connectivity, static_cast<int32_t>(connections.size()));
  for (const connection& c : connections) Append(connectivity, c);

  // EMBEDDED_METADATA: the kernels, their arguments, ports and instances.
  std::string xml = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<project name=\"accllm\">\n  <platform vendor=\"xilinx\" "
      "boardid=\"u280\" name=\"%s\" featureRomTime=\"0\">\n    <version major=\"1\" minor=\"0\"/>\n    <device "
      "name=\"fpga0\" fpgaDevice=\"virtexuplushbm:xcu280:fsvh2892:-2L:e\" addrWidth=\"0\">\n      <core "
      "name=\"OCL_REGION_0\" target=\"hw\" type=\"clc_region\" clockFreq=\"%dMHz\" numComputeUnits=\"%d\">\n"
      "        <kernelClocks>\n          <clock port=\"KERNEL_CLK\" frequency=\"%dMHz\"/>\n          <clock "
      "port=\"DATA_CLK\" frequency=\"%dMHz\"/>\n        </kernelClocks>\n",
      design.platform, design.clock_mhz, design.units.size(), design.clock_mhz, design.clock_mhz);
  for (const KernelSignature& k : AcceleratorKernels()) {
    std::vector<const ComputeUnit*> units;
    for (const ComputeUnit& u : design.units) {
      if (u.kernel == k.name) units.push_back(&u);
    }
    if (!units.empty()) xml += KernelXml(k, units, base);
  }
  xml += "      </core>\n    </device>\n  </platform>\n</project>\n";

  const std::vector<std::pair<axlf_section_kind, std::string*>> sections = {
      {EMBEDDED_METADATA, &xml}, {MEM_TOPOLOGY, &mem}, {IP_LAYOUT, &ips}, {CONNECTIVITY, &connectivity}};
  const std::size_t header_bytes = sizeof(axlf) + (sections.size() - 1) * sizeof(axlf_section_header);
  std::string body;
  std::vector<axlf_section_header> headers;
  for (const auto& [kind, data] : sections) {
    axlf_section_header h{};
    h.m_sectionKind = kind;
    std::strncpy(h.m_sectionName, kind == EMBEDDED_METADATA ? "metadata" : kind == MEM_TOPOLOGY ? "mem_topology"
                                                                : kind == IP_LAYOUT        ? "ip_layout"
                                                                                           : "connectivity",
                 sizeof(h.m_sectionName) - 1);
    PadTo8(body);
    h.m_sectionOffset = header_bytes + body.size();
    h.m_sectionSize = data->size();
    body += *data;
    headers.push_back(h);
  }

  axlf top{};
  std::memcpy(top.m_magic, "xclbin2", 8);
  top.m_signature_length = -1;
  std::memset(top.reserved, 0xFF, sizeof(top.reserved));
  std::memset(top.m_keyBlock, 0xFF, sizeof(top.m_keyBlock));
  std::mt19937_64 rng(std::chrono::steady_clock::now().time_since_epoch().count());
  top.m_uniqueId = rng();
  top.m_header.m_length = header_bytes + body.size();
  top.m_header.m_timeStamp = static_cast<uint64_t>(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()));
  top.m_header.m_versionMajor = 2;
  top.m_header.m_versionMinor = 13;
  top.m_header.m_mode = XCLBIN_FLAT;
  std::strncpy(reinterpret_cast<char*>(top.m_header.m_platformVBNV), design.platform.c_str(),
               sizeof(top.m_header.m_platformVBNV) - 1);
  for (auto& byte : top.m_header.uuid) byte = static_cast<unsigned char>(rng());
  top.m_header.m_numSections = static_cast<uint32_t>(sections.size());

  std::string out(reinterpret_cast<const char*>(&top), sizeof(axlf) - sizeof(axlf_section_header));
  for (const axlf_section_header& h : headers) Append(out, h);
  out += body;
  return out;
}

}  // namespace accllm::fpga
