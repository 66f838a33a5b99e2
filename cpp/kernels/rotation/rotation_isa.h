// The per-ISA entry points of the rotation kernels (defined by rotation_inl.h in each TU).
#pragma once

#include <cstdint>

namespace arrowquant::kernels::rotation {
namespace baseline { void forward(float* values, int64_t blocks); void inverse(float* values, int64_t blocks); }
namespace avx2 { void forward(float* values, int64_t blocks); void inverse(float* values, int64_t blocks); }
namespace avx512 { void forward(float* values, int64_t blocks); void inverse(float* values, int64_t blocks); }
}  // namespace arrowquant::kernels::rotation
