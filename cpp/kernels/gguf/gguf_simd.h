// Vectorised GGUF encoders, one namespace per ISA, and the choice among them. Each writes exactly
// the bytes of the scalar reference it replaces (tests compare every path with ggml itself).
#pragma once

#include <cstdint>

#include "kernels/gguf/gguf_kernels.h"
#include "kernels/quant/quant_kernels.h"

namespace arrowquant::kernels::gguf {

namespace avx2 {
void encode_q4_K(const float* x, int64_t n, uint8_t* out);
void encode_q5_K(const float* x, int64_t n, uint8_t* out);
void encode_q6_K(const float* x, int64_t n, uint8_t* out);
void encode_q2_K(const float* x, int64_t n, uint8_t* out);
void encode_q3_K(const float* x, int64_t n, uint8_t* out);
void encode_iq4_nl(const float* x, int64_t n, uint8_t* out);
void encode_iq4_xs(const float* x, int64_t n, uint8_t* out);
void decode_q2_K(const uint8_t* in, int64_t n, float* y);
void decode_q3_K(const uint8_t* in, int64_t n, float* y);
void decode_iq4_nl(const uint8_t* in, int64_t n, float* y);
void decode_iq4_xs(const uint8_t* in, int64_t n, float* y);
void encode_q4_0(const float* x, int64_t n, uint8_t* out);
void encode_q4_1(const float* x, int64_t n, uint8_t* out);
void encode_q5_0(const float* x, int64_t n, uint8_t* out);
void encode_q5_1(const float* x, int64_t n, uint8_t* out);
void encode_q8_0(const float* x, int64_t n, uint8_t* out);
}  // namespace avx2

namespace avx512 {
void encode_q4_K(const float* x, int64_t n, uint8_t* out);
void encode_q5_K(const float* x, int64_t n, uint8_t* out);
void encode_q6_K(const float* x, int64_t n, uint8_t* out);
void encode_q2_K(const float* x, int64_t n, uint8_t* out);
void encode_q3_K(const float* x, int64_t n, uint8_t* out);
void encode_iq4_nl(const float* x, int64_t n, uint8_t* out);
void encode_iq4_xs(const float* x, int64_t n, uint8_t* out);
void decode_q2_K(const uint8_t* in, int64_t n, float* y);
void decode_q3_K(const uint8_t* in, int64_t n, float* y);
void decode_iq4_nl(const uint8_t* in, int64_t n, float* y);
void decode_iq4_xs(const uint8_t* in, int64_t n, float* y);
void encode_q4_0(const float* x, int64_t n, uint8_t* out);
void encode_q4_1(const float* x, int64_t n, uint8_t* out);
void encode_q5_0(const float* x, int64_t n, uint8_t* out);
void encode_q5_1(const float* x, int64_t n, uint8_t* out);
void encode_q8_0(const float* x, int64_t n, uint8_t* out);
}  // namespace avx512

// The fastest encoder of `type` in ggml mode that the ISA has (its scalar reference otherwise).
EncodeFn ggml_encoder(const TypeTraits& type, Isa isa);
// The fastest decoder of `type` the ISA has; every one gives the scalar decoder's floats.
DecodeFn decoder(const TypeTraits& type, Isa isa);

}  // namespace arrowquant::kernels::gguf
