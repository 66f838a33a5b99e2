#include "kernels/rotation/rotation_isa.h"
#include "kernels/rotation/rotation_kernels.h"

#include <cstdint>
#include <utility>

namespace arrowquant::kernels::rotation::avx512 {
inline constexpr int kLanes = 16;
#include "kernels/rotation/rotation_inl.h"
}  // namespace arrowquant::kernels::rotation::avx512
