#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/kernels.h"

namespace accllm {
namespace {

// Features __builtin_cpu_supports does not name in every compiler (clang 14 lacks both), read
// from CPUID: F16C is leaf 1 ECX bit 29, AVX-VNNI leaf 7 subleaf 1 EAX bit 4. Used only together
// with a feature the builtin checks, which covers the OS saving the registers.
bool CpuidBit(unsigned leaf, unsigned subleaf, int reg, int bit) {
  unsigned r[4] = {};
  if (__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3]) == 0) return false;
  return (r[reg] >> bit) & 1u;
}
bool HasF16c() { return CpuidBit(1, 0, /*ecx=*/2, 29); }
bool HasAvxVnni() { return CpuidBit(7, 1, /*eax=*/0, 4); }
bool HasGfni() { return CpuidBit(7, 0, /*ecx=*/2, 8); }  // every AMX CPU so far has it

// AMX-TILE and AMX-INT8 (leaf 7 EDX bits 24, 25), the OS saving the tile state (XCR0 bits 17, 18),
// and Linux's per-process permission to use it (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA), asked for once.
bool HasAmx() {
  static const bool granted = [] {
    if (!CpuidBit(7, 0, /*edx=*/3, 24) || !CpuidBit(7, 0, /*edx=*/3, 25) || !CpuidBit(1, 0, /*ecx=*/2, 27)) return false;
    unsigned eax = 0, edx = 0;
    __asm__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    if (((eax >> 17) & 3u) != 3u) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

// __builtin_cpu_supports also checks that the OS saves the registers (XCR0).
bool Supports(CpuPath path) {
  switch (path) {
    case CpuPath::kScalar:
      return true;
    case CpuPath::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16c();
    case CpuPath::kAvx2Vnni:
      return Supports(CpuPath::kAvx2) &&
             (HasAvxVnni() ||
              (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")));
    case CpuPath::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    case CpuPath::kAmx:
      return Supports(CpuPath::kAvx512) && HasGfni() && HasAmx();
  }
  return false;
}

}  // namespace

absl::StatusOr<CpuPath> ParseCpuPath(const std::string& name) {
  if (name == "scalar") return CpuPath::kScalar;
  if (name == "avx2") return CpuPath::kAvx2;
  if (name == "avx2-vnni") return CpuPath::kAvx2Vnni;
  if (name == "avx512") return CpuPath::kAvx512;
  if (name == "amx") return CpuPath::kAmx;
  return absl::InvalidArgumentError(absl::StrCat("unknown CPU path '", name, "' (scalar, avx2, avx2-vnni, avx512, amx)"));
}

absl::StatusOr<const CpuKernels*> KernelsFor(CpuPath path) {
  const CpuKernels* kernels = path == CpuPath::kAmx        ? &kAmxKernels
                              : path == CpuPath::kAvx512   ? &kAvx512Kernels
                              : path == CpuPath::kAvx2Vnni ? (HasAvxVnni() ? &kAvx2VnniKernels
                                                                                                 : &kAvx2VnniEvexKernels)
                              : path == CpuPath::kAvx2     ? &kAvx2Kernels
                                                           : &kScalarKernels;
  if (!Supports(path)) {
    return absl::FailedPreconditionError(absl::StrCat("this CPU cannot run the ", kernels->name, " kernels"));
  }
  return kernels;
}

absl::StatusOr<const CpuKernels*> SelectedKernels() {
  static const absl::StatusOr<const CpuKernels*> selected = []() -> absl::StatusOr<const CpuKernels*> {
    if (const char* forced = std::getenv("ACCLLM_CPU_PATH"); forced != nullptr && *forced != '\0') {
      absl::StatusOr<CpuPath> path = ParseCpuPath(forced);
      if (!path.ok()) return absl::InvalidArgumentError(absl::StrCat("ACCLLM_CPU_PATH: ", path.status().message()));
      return KernelsFor(*path);
    }
    for (CpuPath path : {CpuPath::kAmx, CpuPath::kAvx512, CpuPath::kAvx2Vnni, CpuPath::kAvx2}) {
      if (Supports(path)) return KernelsFor(path);
    }
    return &kScalarKernels;
  }();
  return selected;
}

}  // namespace accllm
