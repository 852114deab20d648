// The 256-bit kernels of kernels_avx2_body.h: The avx2-vnni path on CPUs with AVX-512: the same 256-bit vpdpbusd, EVEX-encoded.
#define ACCLLM_AVX2_TABLE kAvx2VnniEvexKernels
#define ACCLLM_AVX2_PATH CpuPath::kAvx2Vnni
#define ACCLLM_AVX2_NAME "avx2-vnni"
#include "runtime/cpu/kernels_avx2_body.h"
