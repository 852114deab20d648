// A heap buffer with a fixed alignment (64 bytes: one cache line, one AVX-512 register).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

namespace accllm {

inline constexpr std::size_t kBufferAlignment = 64;

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Zero-initialised. note: returns an empty buffer if the allocation fails; check size().
  explicit AlignedBuffer(std::size_t bytes) {
    if (bytes == 0) return;
    const std::size_t rounded = (bytes + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
    void* p = std::aligned_alloc(kBufferAlignment, rounded);
    if (p == nullptr) return;
    std::memset(p, 0, rounded);
    data_.reset(static_cast<std::byte*>(p));
    size_ = bytes;
  }

  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  std::span<std::byte> bytes() { return {data(), size_}; }

  template <typename T>
  T* as() { return reinterpret_cast<T*>(data_.get()); }
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(data_.get()); }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
};

}  // namespace accllm
