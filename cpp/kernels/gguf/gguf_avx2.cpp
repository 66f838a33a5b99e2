// The avx2 path of the GGUF k-quant encoders: ggml's reference quantizers (every quantized type) with one
// sub-block per lane (8 lanes), byte-identical to the scalar reference (gguf_kquant_lanes_inl.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_simd.h"

namespace arrowquant::kernels::gguf::avx2 {

#define AQ_LANES 8
#include "kernels/gguf/gguf_kquant_lanes_inl.h"
#undef AQ_LANES

void encode_q4_K(const float* x, int64_t n, uint8_t* out) { encode_kquant<15, 144>(x, n, out); }
void encode_q5_K(const float* x, int64_t n, uint8_t* out) { encode_kquant<31, 176>(x, n, out); }
void encode_q6_K(const float* x, int64_t n, uint8_t* out) { encode_q6_K_all(x, n, out); }
void encode_q2_K(const float* x, int64_t n, uint8_t* out) { encode_q2_K_all(x, n, out); }
void encode_q3_K(const float* x, int64_t n, uint8_t* out) { encode_q3_K_all(x, n, out); }
void encode_iq4_nl(const float* x, int64_t n, uint8_t* out) { encode_iq4_nl_all(x, n, out); }
void encode_iq4_xs(const float* x, int64_t n, uint8_t* out) { encode_iq4_xs_all(x, n, out); }
void decode_q2_K(const uint8_t* in, int64_t n, float* y) { decode_q2_K_all(in, n, y); }
void decode_q3_K(const uint8_t* in, int64_t n, float* y) { decode_q3_K_all(in, n, y); }
void decode_iq4_nl(const uint8_t* in, int64_t n, float* y) { decode_iq4_nl_all(in, n, y); }
void decode_iq4_xs(const uint8_t* in, int64_t n, float* y) { decode_iq4_xs_all(in, n, y); }
void encode_q4_0(const float* x, int64_t n, uint8_t* out) { encode_legacy<Legacy::kQ4_0, 18>(x, n, out); }
void encode_q4_1(const float* x, int64_t n, uint8_t* out) { encode_legacy<Legacy::kQ4_1, 20>(x, n, out); }
void encode_q5_0(const float* x, int64_t n, uint8_t* out) { encode_legacy<Legacy::kQ5_0, 22>(x, n, out); }
void encode_q5_1(const float* x, int64_t n, uint8_t* out) { encode_legacy<Legacy::kQ5_1, 24>(x, n, out); }
void encode_q8_0(const float* x, int64_t n, uint8_t* out) { encode_legacy<Legacy::kQ8_0, 34>(x, n, out); }

}  // namespace arrowquant::kernels::gguf::avx2
