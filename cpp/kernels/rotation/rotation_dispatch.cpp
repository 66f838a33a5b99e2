#include "kernels/rotation/rotation_isa.h"
#include "kernels/rotation/rotation_kernels.h"

namespace arrowquant::kernels::rotation {

RotationKernels rotation_kernels(Isa isa) {
  switch (isa) {
#if ARROWQUANT_X86_KERNELS
    case Isa::kAvx512: return {avx512::forward, avx512::inverse};
    case Isa::kAvx2: return {avx2::forward, avx2::inverse};
#endif
    default: return {baseline::forward, baseline::inverse};
  }
}

}  // namespace arrowquant::kernels::rotation
