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
};

namespace avx2 {
std::span<const SimdKernel> simd_kernels();
}  // namespace avx2

namespace avx512 {
std::span<const SimdKernel> simd_kernels();
}  // namespace avx512

// The lane kernels compiled for baseline x86-64: the scalar path's search encoders.
namespace baseline_lanes {
std::span<const SimdKernel> simd_kernels();
}  // namespace baseline_lanes

// The fastest encoder of `type` in ggml mode that the ISA has (its scalar reference otherwise).
EncodeFn ggml_encoder(const TypeTraits& type, Isa isa);
// The search encoder of `type` for the ISA: the lane search where the type has one (the same bytes
// on every ISA), the type's own encode_search otherwise.
EncodeFn search_encoder(const TypeTraits& type, Isa isa);
// The fastest decoder of `type` the ISA has; every one gives the scalar decoder's floats.
DecodeFn decoder(const TypeTraits& type, Isa isa);

}  // namespace arrowquant::kernels::gguf
