// The 256-bit kernels of kernels_avx2_body.h: AVX2 + FMA + F16C, no VNNI.
#define ACCLLM_AVX2_TABLE kAvx2Kernels
#define ACCLLM_AVX2_PATH CpuPath::kAvx2
#define ACCLLM_AVX2_NAME "avx2"
#include "runtime/cpu/kernels_avx2_body.h"
