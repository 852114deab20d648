// The few HLS types the kernels use, for C simulation with plain g++. A Vitis build defines
// ACCLLM_VITIS_HLS and maps them to the vendor types (ap_uint<512>, hls::stream); the vendor
// headers are not part of this repository.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef ACCLLM_VITIS_HLS
#include <ap_int.h>
#include <hls_stream.h>
#endif

namespace accllm::hls {

inline constexpr int kBeatBytes = 64;  // one 512-bit HBM beat

#ifdef ACCLLM_VITIS_HLS
using Beat = ap_uint<512>;
template <typename T, int kDepth = 2>
using Stream = ::hls::stream<T, kDepth>;
inline uint8_t BeatByte(const Beat& beat, int i) { return beat.range(8 * i + 7, 8 * i); }
#else
// One 512-bit beat: 64 bytes, as the AXI port delivers them.
struct Beat {
  uint8_t bytes[kBeatBytes];
};
inline uint8_t BeatByte(const Beat& beat, int i) { return beat.bytes[i]; }

// A FIFO between stages or kernels. C simulation runs them one after another, so the FIFO must
// be deep enough for everything one writes before the next reads (checked).
template <typename T, int kDepth = 2>
class Stream {
 public:
  void write(const T& v) {
    if (count_ == kDepth) __builtin_trap();  // a real design would deadlock: make it loud
    data_[(head_ + count_++) % kDepth] = v;
  }
  T read() {
    if (count_ == 0) __builtin_trap();
    T v = data_[head_];
    head_ = (head_ + 1) % kDepth;
    --count_;
    return v;
  }
  bool empty() const { return count_ == 0; }

 private:
  T data_[kDepth];
  int head_ = 0;
  int count_ = 0;
};
#endif

// A large on-chip buffer: a plain local in HLS; per thread in C simulation, off the (worker's) stack.
#ifdef ACCLLM_VITIS_HLS
#define ACCLLM_CSIM_THREAD_LOCAL
#else
#define ACCLLM_CSIM_THREAD_LOCAL static thread_local
#endif

// fp16 bits → float, as the DSP-side converter does (exact for every fp16 value).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  const uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: shift the leading 1 up to bit 10 (no data-dependent loop: one clz)
    const int shift = __builtin_clz(mantissa) - 21;
    bits = sign | ((113u - shift) << 23) | (((mantissa << shift) & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// float → fp16 bits, rounded to nearest even (runtime/common/half.h's FloatToFp16, bit for bit).
inline uint16_t FloatToHalf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflows to inf
  if (abs < 0x38800000u) {                        // subnormal or zero in fp16
    float magnitude;
    std::memcpy(&magnitude, &abs, sizeof magnitude);
    const float scaled = magnitude * 0x1p24f;  // exact: below 1024
    uint32_t m = static_cast<uint32_t>(scaled);
    const float rem = scaled - static_cast<float>(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return sign | static_cast<uint16_t>(m);
  }
  uint32_t v = abs - (112u << 23);          // rebias the exponent
  v += 0xfffu + ((v >> 13) & 1u);           // round to nearest even
  return sign | static_cast<uint16_t>(v >> 13);
}

}  // namespace accllm::hls
