// The 256-bit kernels of kernels_avx2_body.h: AVX2 with AVX-VNNI (VEX-encoded vpdpbusd).
#define ACCLLM_AVX2_TABLE kAvx2VnniKernels
#define ACCLLM_AVX2_PATH CpuPath::kAvx2Vnni
#define ACCLLM_AVX2_NAME "avx2-vnni"
#include "runtime/cpu/kernels_avx2_body.h"
