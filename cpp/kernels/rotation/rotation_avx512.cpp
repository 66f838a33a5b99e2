#include "kernels/rotation/rotation_kernels.h"
#include "kernels/rotation/rotation_isa.h"

namespace arrowquant::kernels::rotation::avx512 {
#include "kernels/rotation/rotation_inl.h"
}  // namespace arrowquant::kernels::rotation::avx512
