// The CPU's own peak int8 multiply-accumulate loops, for peak_bench.cc. Compiled for AMX and
// AVX-512 VNNI: call only where the kernel dispatcher found the path (KernelsFor succeeded).
#pragma once

#include <cstdint>

namespace accllm {

// `rounds` x 4 TDPBSSD on operands held in tile registers, into four independent C tiles
// (16 x 16 x 64 MACs each). Returns a value that depends on every product.
int32_t AmxTilePeakLoop(int64_t rounds);

// `rounds` x 12 VPDPBUSD (512 bits: 64 MACs each) into twelve independent accumulators.
int32_t VnniPeakLoop(int64_t rounds);

}  // namespace accllm
