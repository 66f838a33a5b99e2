// The baseline x86-64 path of the GGUF lane kernels (8 lanes in SSE registers). Its table is used
// only for the search encoders of the scalar path: ggml mode there is the scalar reference itself,
// while the searches must write the bytes of the AVX2 / AVX-512 paths, so every path runs the same
// lane code (gguf_kquant_search_inl.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_simd.h"

namespace arrowquant::kernels::gguf::baseline_lanes {

#define AQ_LANES 8
#include "kernels/gguf/gguf_kquant_lanes_inl.h"
#undef AQ_LANES

}  // namespace arrowquant::kernels::gguf::baseline_lanes
