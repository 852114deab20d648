#include "tests/xrt_noop_compute.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xrt/ert.h>
#include <xrt/xrt.h>
#include <xrt/xrt_device.h>

#include <experimental/xrt_xclbin.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fpga/host/kernel_signatures.h"
#include "fpga/kernels/sequencer.h"

namespace accllm::testing {
namespace {

// The noop shim's member functions, by their exported (mangled) names.
constexpr const char* kAllocBo = "_ZN8xrt_core4shimINS_11device_pcieEE8alloc_boEmj";
constexpr const char* kAllocUserBo = "_ZN8xrt_core4shimINS_11device_pcieEE8alloc_boEPvmj";
constexpr const char* kMapBo = "_ZN8xrt_core4shimINS_11device_pcieEE6map_boEjb";
constexpr const char* kSyncBo = "_ZN8xrt_core4shimINS_11device_pcieEE7sync_boEj18xclBOSyncDirectionmm";
constexpr const char* kExecBuf = "_ZN8xrt_core4shimINS_11device_pcieEE8exec_bufEj";
constexpr const char* kBoProperties = "_ZNK8xrt_core4shimINS_11device_pcieEE17get_bo_propertiesEjP15xclBOProperties";

using AllocFn = unsigned int (*)(void*, std::size_t, unsigned int);
using AllocUserFn = unsigned int (*)(void*, void*, std::size_t, unsigned int);
using MapFn = void* (*)(void*, unsigned int, bool);
using SyncFn = void (*)(void*, unsigned int, xclBOSyncDirection, std::size_t, std::size_t);
using ExecFn = void (*)(void*, unsigned int);
using PropertiesFn = void (*)(const void*, unsigned int, xclBOProperties*);

struct Shadow {
  uint64_t address;
  std::vector<uint8_t> bytes;  // the "device" side
};

struct State {
  std::mutex mutex;
  AllocFn alloc = nullptr;
  AllocUserFn alloc_user = nullptr;
  MapFn map = nullptr;
  SyncFn sync = nullptr;
  ExecFn exec = nullptr;
  PropertiesFn properties = nullptr;
  std::map<unsigned int, Shadow> buffers;
  std::map<uint64_t, Shadow*> by_address;  // each shadow by its first device address
  uint64_t next_address = 0x100000000ull;
  std::vector<std::string> cu_kernels;  // kernel of each CU index
  xrt::device device;  // keeps the patched device object alive
  std::atomic<int> runs{0};
  std::atomic<int> sequencer_runs{0};
  std::string fail_kernel;  // the next fail_runs starts of this kernel fault
  int fail_runs = 0;
};
State& S() {
  static State* state = new State();
  return *state;
}

// The shadow bytes at a device address (null when no buffer holds it). Called with the mutex held.
uint8_t* DevicePointer(uint64_t address) {
  auto it = S().by_address.upper_bound(address);
  if (it == S().by_address.begin()) return nullptr;
  Shadow& shadow = *std::prev(it)->second;
  if (address < shadow.address || address >= shadow.address + shadow.bytes.size()) return nullptr;
  return shadow.bytes.data() + (address - shadow.address);
}

void AddShadow(unsigned int handle, std::size_t size) {
  std::lock_guard<std::mutex> lock(S().mutex);
  if (auto old = S().buffers.find(handle); old != S().buffers.end()) S().by_address.erase(old->second.address);
  Shadow& shadow = S().buffers[handle] = {S().next_address, std::vector<uint8_t>(size, 0xAB)};  // garbage until synced
  S().by_address[shadow.address] = &shadow;
  S().next_address += (size + 4095) / 4096 * 4096;
}

unsigned int HookAlloc(void* self, std::size_t size, unsigned int flags) {
  const unsigned int handle = S().alloc(self, size, flags);
  AddShadow(handle, size);
  return handle;
}

unsigned int HookAllocUser(void* self, void* user, std::size_t size, unsigned int flags) {
  const unsigned int handle = S().alloc_user(self, user, size, flags);
  AddShadow(handle, size);
  return handle;
}

void HookProperties(const void* self, unsigned int handle, xclBOProperties* out) {
  S().properties(self, handle, out);
  std::lock_guard<std::mutex> lock(S().mutex);
  if (auto it = S().buffers.find(handle); it != S().buffers.end()) out->paddr = it->second.address;
}

void HookSync(void* self, unsigned int handle, xclBOSyncDirection dir, std::size_t size, std::size_t offset) {
  S().sync(self, handle, dir, size, offset);
  auto* host = static_cast<uint8_t*>(S().map(self, handle, true));
  std::lock_guard<std::mutex> lock(S().mutex);
  auto it = S().buffers.find(handle);
  if (it == S().buffers.end()) return;
  uint8_t* device = it->second.bytes.data();
  if (dir == XCL_BO_SYNC_BO_TO_DEVICE) {
    std::memcpy(device + offset, host + offset, size);
  } else {
    std::memcpy(host + offset, device + offset, size);
  }
}

void HookExec(void* self, unsigned int command) {
  auto* packet = static_cast<ert_start_kernel_cmd*>(S().map(self, command, true));
  if (packet->opcode == ERT_START_CU) {
    int cu = 0;
    while (cu < 32 && !(packet->cu_mask & (1u << cu))) ++cu;
    std::unique_lock<std::mutex> lock(S().mutex);
    if (S().fail_runs > 0 && S().cu_kernels.at(static_cast<std::size_t>(cu)) == S().fail_kernel) {
      --S().fail_runs;
      lock.unlock();
      S().exec(self, command);
      packet->state = ERT_CMD_STATE_ERROR;  // what XRT reports for a compute unit that faulted
      return;
    }
  }
  if (packet->opcode == ERT_START_CU) {
    // Register map: after the extra CU masks, word i is the register at byte 4 * i.
    const uint32_t* regs = packet->data + packet->extra_cu_masks;
    int cu = 0;
    while (cu < 32 && !(packet->cu_mask & (1u << cu))) ++cu;
    std::lock_guard<std::mutex> lock(S().mutex);
    const std::string& kernel = S().cu_kernels.at(static_cast<std::size_t>(cu));
    const fpga::KernelSignature& sig = *fpga::FindKernel(kernel);
    std::vector<uint64_t> args;
    int offset = 0x10;  // as fpga/host/xclbin_writer.cc lays them out
    for (const fpga::KernelArg& a : sig.args) {
      if (a.is_stream()) break;  // streams come last and have no registers
      uint64_t v = regs[offset / 4];
      if (a.bytes == 8) v |= static_cast<uint64_t>(regs[offset / 4 + 1]) << 32;
      args.push_back(v);
      offset += a.bytes == 8 ? 12 : 8;
    }
    if (kernel == "accllm_sequencer") {
      // The descriptors name buffers by device address: the sequencer and the unit chains it runs
      // in C simulation reach them in the shadows.
      const hls::ScopedDeviceMemory memory([](uint64_t address) -> void* { return DevicePointer(address); });
      hls::RunSequencerInCSim(reinterpret_cast<const hls::StepDescriptor*>(DevicePointer(args[fpga::kSequencerProgram])),
                              static_cast<int>(args[fpga::kSequencerCount]));
      S().sequencer_runs.fetch_add(1);
    } else {
      // The W2A8 and attention units run until a stop; the sequencer's C simulation runs their
      // work, so a start here only counts.
      S().runs.fetch_add(1);
    }
  }
  S().exec(self, command);
}

}  // namespace

absl::Status InstallNoopComputeHook(const std::string& xclbin_path) {
  State& s = S();
  void* lib = dlopen("libxrt_noop.so.2", RTLD_NOW | RTLD_NOLOAD);
  try {
    s.device = xrt::device(0);  // loads the noop shim
    if (lib == nullptr) lib = dlopen("libxrt_noop.so.2", RTLD_NOW | RTLD_NOLOAD);
    const xrt::xclbin xclbin(xclbin_path);
    // XRT numbers compute units by interrupt id, which the xclbin writer gives in unit order.
    std::vector<std::pair<uint64_t, std::string>> cus;
    for (const auto& k : xclbin.get_kernels()) {
      for (const auto& ip : k.get_cus()) cus.emplace_back(ip.get_base_address(), k.get_name());
    }
    std::sort(cus.begin(), cus.end());
    for (const auto& [address, name] : cus) s.cu_kernels.push_back(name);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("noop device: ", e.what()));
  }
  if (lib == nullptr) return absl::UnavailableError("libxrt_noop.so.2 is not loaded");
  void* alloc = dlsym(lib, kAllocBo);
  void* alloc_user = dlsym(lib, kAllocUserBo);
  void* map = dlsym(lib, kMapBo);
  void* sync = dlsym(lib, kSyncBo);
  void* exec = dlsym(lib, kExecBuf);
  void* properties = dlsym(lib, kBoProperties);
  if (!alloc || !alloc_user || !map || !sync || !exec || !properties) {
    return absl::UnavailableError("noop shim symbols not found");
  }
  s.alloc = reinterpret_cast<AllocFn>(alloc);
  s.alloc_user = reinterpret_cast<AllocUserFn>(alloc_user);
  s.map = reinterpret_cast<MapFn>(map);
  s.sync = reinterpret_cast<SyncFn>(sync);
  s.exec = reinterpret_cast<ExecFn>(exec);
  s.properties = reinterpret_cast<PropertiesFn>(properties);

  // Every xrt::device(0) is a new object of the noop device class, so the class's vtable itself
  // is patched (it sits in a read-only page after relocation: unprotect it for the writes).
  void* object = s.device.get_handle().get();
  void** vptr = *reinterpret_cast<void***>(object);
  constexpr int kSlots = 160;  // more than xrt_core::device has virtual functions
  const long page = sysconf(_SC_PAGESIZE);
  int replaced = 0;
  for (int i = 0; i < kSlots && replaced < 5; ++i) {
    void* hook = vptr[i] == alloc ? reinterpret_cast<void*>(HookAlloc)
                 : vptr[i] == alloc_user ? reinterpret_cast<void*>(HookAllocUser)
                 : vptr[i] == sync ? reinterpret_cast<void*>(HookSync)
                 : vptr[i] == exec ? reinterpret_cast<void*>(HookExec)
                 : vptr[i] == properties ? reinterpret_cast<void*>(HookProperties)
                                         : nullptr;
    if (hook == nullptr) continue;
    auto* start = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(&vptr[i]) & ~static_cast<uintptr_t>(page - 1));
    if (mprotect(start, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE) != 0) {
      return absl::UnavailableError("cannot unprotect the noop device's vtable");
    }
    vptr[i] = hook;
    mprotect(start, static_cast<std::size_t>(page), PROT_READ);
    ++replaced;
  }
  if (replaced != 5) return absl::UnavailableError(absl::StrCat("found ", replaced, " of 5 noop vtable entries"));
  return absl::OkStatus();
}

int NoopComputedRuns() { return S().runs.load(); }
int NoopComputedSequencerRuns() { return S().sequencer_runs.load(); }
void NoopFailNextRuns(const std::string& kernel, int runs) {
  std::lock_guard<std::mutex> lock(S().mutex);
  S().fail_kernel = kernel;
  S().fail_runs = runs;
}

}  // namespace accllm::testing
