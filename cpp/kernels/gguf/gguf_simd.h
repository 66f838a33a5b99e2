// Vectorised GGUF encoders and decoders, one table per ISA, and the choice among them. Each writes
// exactly the bytes (or floats) of the scalar reference it replaces; tests compare every path with
// ggml itself.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/gguf/gguf_kernels.h"
#include "kernels/quant/quant_kernels.h"

namespace arrowquant::kernels::gguf {

// One row per type an ISA vectorises; a null function means that ISA keeps the scalar one.
struct SimdKernel {
  GgmlType type;
  EncodeFn encode_ggml;
  DecodeFn decode;
  EncodeFn encode_search;  // a lane search (same bytes on every path), or null: the type's own
  EncodeFn encode_fast;    // a lane fast fit (same bytes on every path), or null: the type's own
};

namespace avx2 {
std::span<const SimdKernel> simd_kernels();
}  // namespace avx2

namespace avx512 {
std::span<const SimdKernel> simd_kernels();
}  // namespace avx512

// The lane searches and fast fits compiled for baseline x86-64: the scalar path's (and
// TypeTraits') search encoders of every k-quant and Q8_0 and fast fits of Q4_K and Q5_K, writing
// the bytes the AVX2 / AVX-512 paths write.
namespace baseline_lanes {
void encode_q4_K_search(const float* x, int64_t n, uint8_t* out);
void encode_q5_K_search(const float* x, int64_t n, uint8_t* out);
void encode_q4_K_fast(const float* x, int64_t n, uint8_t* out);
void encode_q5_K_fast(const float* x, int64_t n, uint8_t* out);
void encode_q8_0_search(const float* x, int64_t n, uint8_t* out);
void encode_q6_K_search(const float* x, int64_t n, uint8_t* out);
void encode_q2_K_search(const float* x, int64_t n, uint8_t* out);
void encode_q3_K_search(const float* x, int64_t n, uint8_t* out);
}  // namespace baseline_lanes

// The fastest encoder of `type` in ggml mode that the ISA has (its scalar reference otherwise).
EncodeFn ggml_encoder(const TypeTraits& type, Isa isa);
// The fastest search encoder of `type` the ISA has (every one writes the bytes of the type's
// encode_search); ggml_encoder's for a type without one.
EncodeFn search_encoder(const TypeTraits& type, Isa isa);
// The fastest fast-fit encoder of `type` the ISA has (every one writes the bytes of the type's
// encode_fast); ggml_encoder's for a type without one.
EncodeFn fast_encoder(const TypeTraits& type, Isa isa);
// The fastest decoder of `type` the ISA has; every one gives the scalar decoder's floats.
DecodeFn decoder(const TypeTraits& type, Isa isa);

}  // namespace arrowquant::kernels::gguf
