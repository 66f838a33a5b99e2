// The avx2 path of the GGUF kernels: ggml's reference quantizers (every quantized type) with one
// sub-block or block per lane (8 lanes) and some decoders, byte-identical to the scalar
// reference (gguf_kquant_lanes_inl.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_reference_parts.h"
#include "kernels/gguf/gguf_simd.h"

namespace arrowquant::kernels::gguf::avx2 {

#define AQ_LANES 8
#include "kernels/gguf/gguf_kquant_lanes_inl.h"
#undef AQ_LANES

}  // namespace arrowquant::kernels::gguf::avx2
