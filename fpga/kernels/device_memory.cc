#include "fpga/kernels/device_memory.h"

#ifndef ACCLLM_VITIS_HLS
namespace accllm::hls {
namespace {

thread_local ScopedDeviceMemory::Map device_memory = nullptr;

}  // namespace

void* MapDeviceAddress(uint64_t address) {
  if (device_memory != nullptr) return device_memory(address);
  return reinterpret_cast<void*>(static_cast<uintptr_t>(address));
}

ScopedDeviceMemory::ScopedDeviceMemory(Map memory) : previous_(device_memory) { device_memory = memory; }
ScopedDeviceMemory::~ScopedDeviceMemory() { device_memory = previous_; }

}  // namespace accllm::hls
#endif
