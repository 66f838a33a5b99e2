// The lane searches (every k-quant, Q8_0) and fast fits (Q4_K, Q5_K) for the baseline ISA (8 lanes
// in SSE registers on x86-64; GCC's vector extensions lower them to NEON on aarch64): the types' encode_search and encode_fast, which the scalar path runs. They must
// write the same bytes on every path, so every path runs the same lane code
// (gguf_kquant_search_inl.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_reference_parts.h"
#include "kernels/gguf/gguf_simd.h"

namespace arrowquant::kernels::gguf::baseline_lanes {

#define AQ_LANES 8
#include "kernels/gguf/gguf_kquant_lanes_inl.h"
#undef AQ_LANES

void encode_q4_K_search(const float* x, int64_t n, uint8_t* out) { search_kquant<15, 144>(x, n, out); }
void encode_q5_K_search(const float* x, int64_t n, uint8_t* out) { search_kquant<31, 176>(x, n, out); }
void encode_q4_K_fast(const float* x, int64_t n, uint8_t* out) { fast_kquant<15, 144>(x, n, out); }
void encode_q5_K_fast(const float* x, int64_t n, uint8_t* out) { fast_kquant<31, 176>(x, n, out); }
void encode_q8_0_search(const float* x, int64_t n, uint8_t* out) { search_q8_0(x, n, out); }
void encode_q6_K_search(const float* x, int64_t n, uint8_t* out) { search_q6_K(x, n, out); }
void encode_q2_K_search(const float* x, int64_t n, uint8_t* out) { search_q2_K(x, n, out); }
void encode_q3_K_search(const float* x, int64_t n, uint8_t* out) { search_q3_K(x, n, out); }

}  // namespace arrowquant::kernels::gguf::baseline_lanes
