#include "kernels/cpu/cpu_features.h"
#include "kernels/quant/quant_kernels.h"

namespace arrowquant::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

const KernelTable* kernels_for(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return &scalar_kernel_table();
#if ARROWQUANT_X86_KERNELS
    case Isa::kAvx2: return cpu_features().avx2_fma_f16c ? &avx2_kernel_table() : nullptr;
    case Isa::kAvx512: return cpu_features().avx512_f_bw_vl_dq ? &avx512_kernel_table() : nullptr;
#else  // a build for another processor has the scalar path only (CMakeLists.txt)
    case Isa::kAvx2:
    case Isa::kAvx512: return nullptr;
#endif
  }
  return nullptr;
}

Isa best_isa() {
#if ARROWQUANT_X86_KERNELS
  const CpuFeatures& cpu = cpu_features();
  if (cpu.avx512_f_bw_vl_dq) return Isa::kAvx512;
  if (cpu.avx2_fma_f16c) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

}  // namespace arrowquant::kernels
