// Runs the GGUF block encoders and decoders over whole tensors on the thread pool: each tensor is
// cut into chunks of whole blocks, so the bytes never depend on the thread count. No Arrow, no
// Python; callers own every buffer.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "engine/quantize_engine.h"
#include "kernels/gguf/gguf_kernels.h"
#include "kernels/quant/quant_kernels.h"

namespace arrowquant::engine {

struct GgufEncodeJob {
  const void* weights = nullptr;  // numel elements of element_type
  kernels::ElementType element_type = kernels::ElementType::kFloat32;
  int64_t numel = 0;              // a multiple of type->block_size
  const kernels::gguf::TypeTraits* type = nullptr;
  uint8_t* out = nullptr;         // encoded_bytes(*type, numel) bytes
  bool search = false;            // type->encode_search instead of ggml's reference encoder
  // With importance weights (one per column, n_per_row of them): ggml's importance-weighted
  // quantizer (type->encode_imatrix), row by row; chunks are then whole rows.
  const float* importance = nullptr;
  int64_t n_per_row = 0;
};

struct GgufDecodeJob {
  const uint8_t* encoded = nullptr;
  int64_t numel = 0;
  const kernels::gguf::TypeTraits* type = nullptr;
  float* out = nullptr;           // numel floats
};

// Encodes every job (ggml's reference quantizer, or the type's search encoder). F16 and BF16 inputs are widened to float32
// chunk by chunk (as llama-quantize converts each tensor to float32 first). On a NaN / Inf,
// returns where the first one is; outputs are then unspecified.
std::optional<NonFiniteValue> gguf_encode(std::span<const GgufEncodeJob> jobs, int num_threads);

void gguf_decode(std::span<const GgufDecodeJob> jobs, int num_threads);

}  // namespace arrowquant::engine
