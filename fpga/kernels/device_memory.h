// How a kernel reaches a buffer named by its device address (the sequencer's descriptors and the
// units' commands carry addresses, fpga/kernels/sequencer.h). On a card each kind of buffer is
// reached through one of the kernel's AXI masters: the host sets the master's base register to a
// buffer in the bank it is connected to (offset=slave, as the Vitis kernel flow requires) and
// passes that buffer's device address as `base`, so address A is element (A - base) / sizeof(T)
// of the master; HBM's switch takes a master to any pseudo-channel. In C simulation an address is
// the host address (fpga-sim) or, while a ScopedDeviceMemory lives, whatever it maps to (the XRT
// noop flow's shadow buffers); the masters are not used.
#pragma once

#include <cstdint>
#include <type_traits>

#include "fpga/kernels/hls_compat.h"
#include "fpga/kernels/kv_channels.h"

namespace accllm::hls {

#ifndef ACCLLM_VITIS_HLS
// The host memory at a device address in C simulation.
void* MapDeviceAddress(uint64_t address);

// C simulation of a card whose device addresses are not host addresses (XRT's noop flow keeps a
// shadow of each buffer): while one of these lives, kernels on this thread reach an address
// through `memory` (null for an address no buffer holds). Without one, an address is the host
// address (fpga-sim).
class ScopedDeviceMemory {
 public:
  using Map = void* (*)(uint64_t address);
  explicit ScopedDeviceMemory(Map memory);
  ~ScopedDeviceMemory();
  ScopedDeviceMemory(const ScopedDeviceMemory&) = delete;
  ScopedDeviceMemory& operator=(const ScopedDeviceMemory&) = delete;

 private:
  Map previous_;
};
#endif

// One AXI master of element type T and the device address its base register holds.
template <typename T>
struct DevicePort {
  T* port = nullptr;
  uint64_t base = 0;

  T* At(uint64_t address) const {
#ifdef ACCLLM_VITIS_HLS
    return port + static_cast<int64_t>(address - base) / static_cast<int64_t>(sizeof(T));
#else
    return static_cast<T*>(MapDeviceAddress(address));
#endif
  }
};

// The masters a kernel has on the shared channels (HBM 24-27: activations, tables, norms, the
// embedding), one per element type, all set to one buffer.
struct SharedPorts {
  DevicePort<float> f32;
  DevicePort<int32_t> i32;
  DevicePort<int8_t> i8;
  DevicePort<uint8_t> u8;
  DevicePort<uint16_t> u16;
  DevicePort<uint64_t> u64;

  template <typename T>
  T* At(uint64_t address) const {
    using U = std::remove_const_t<T>;
    if constexpr (std::is_same_v<U, float>) {
      return f32.At(address);
    } else if constexpr (std::is_same_v<U, int32_t>) {
      return i32.At(address);
    } else if constexpr (std::is_same_v<U, int8_t>) {
      return i8.At(address);
    } else if constexpr (std::is_same_v<U, uint8_t>) {
      return u8.At(address);
    } else if constexpr (std::is_same_v<U, uint16_t>) {
      return u16.At(address);
    } else {
      static_assert(std::is_same_v<U, uint64_t>, "no shared master of this element type");
      return u64.At(address);
    }
  }
};

// The card's KV cache as a kernel reaches it: the channel table at `table_address` (read from the
// shared channels, word by word), each KV channel through the master `kv[c]` that the host set to
// that channel's buffer; the layer's first vector added to the vectors it is given.
inline KvChannels KvChannelsAt(const SharedPorts& shared, uint8_t* const kv[kKvChannels], uint64_t table_address,
                               int64_t first_vector) {
  static_assert(sizeof(KvChannelTable) == (2 * kKvChannels + 1) * sizeof(uint64_t), "the table is read as words");
  const uint64_t* words = shared.At<const uint64_t>(table_address);
  KvChannels channels{};
  for (int c = 0; c < kKvChannels; ++c) channels.channel[c] = DevicePort<uint8_t>{kv[c], words[c]}.At(words[c]);
  for (int r = 0; r < 4; ++r) channels.region_offset[r] = static_cast<int64_t>(words[kKvChannels + r]);
  channels.page_tokens = static_cast<int64_t>(words[2 * kKvChannels]);
  channels.first_vector = first_vector;
  return channels;
}

}  // namespace accllm::hls
