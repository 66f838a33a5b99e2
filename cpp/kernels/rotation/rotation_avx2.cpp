#include "kernels/rotation/rotation_isa.h"
#include "kernels/rotation/rotation_kernels.h"

#include <cstdint>
#include <utility>

namespace arrowquant::kernels::rotation::avx2 {
inline constexpr int kLanes = 8;
#include "kernels/rotation/rotation_inl.h"
}  // namespace arrowquant::kernels::rotation::avx2
