// One value's A8 code, shared by the CPU quantizer (runtime/quant/a8.h), its SIMD kernels and the
// accelerator's element-wise unit, so that every device gives the same codes.
#pragma once

#include <cstdint>

#include "runtime/common/round.h"

namespace accllm {

// The code of x given inverse = 127 / max |x|: x * inverse rounded half to even, held to
// [-127, 127] (the product overflows to infinity when the maximum is so small that 127 / max
// does) and 0 when it is NaN (an infinite or NaN x).
inline int8_t A8Code(float x, float inverse) {
  return static_cast<int8_t>(RoundHalfEvenWithin(x * inverse, -127.0f, 127.0f));
}

}  // namespace accllm
