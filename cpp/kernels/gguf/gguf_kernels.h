// GGUF tensor types: ggml's block formats (ggml-common.h), byte for byte, with their encoders and
// decoders. One table row per type holds every rule of that type (block size, bytes per block,
// encoder, decoder); callers ask the table and never restate a block size.
//
// Contract of every function here: pure, no allocation, no exceptions. `n` is a number of
// elements and a multiple of the type's block size (callers check that first); encoders read n
// finite floats and write n / block_size blocks; decoders do the reverse.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace arrowquant::kernels::gguf {

// ggml's type ids (ggml.h), as stored in GGUF files.
enum class GgmlType : int32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kIQ4_NL = 20,
  kIQ4_XS = 23,
  kBF16 = 30,
};

// Super-block size of the k-quants (QK_K).
inline constexpr int kSuperBlock = 256;

using EncodeFn = void (*)(const float* x, int64_t n, uint8_t* out);
using DecodeFn = void (*)(const uint8_t* in, int64_t n, float* out);
// One row of n_per_row elements with its importance weights (one per column: an imatrix entry).
using ImatrixEncodeFn = void (*)(const float* x, int64_t n_per_row, uint8_t* out, const float* importance);

struct TypeTraits {
  GgmlType type;
  const char* name;      // "Q4_K", as ggml_type_name
  int32_t block_size;    // elements per block (1 for F32 / F16 / BF16)
  int32_t block_bytes;   // bytes per block
  EncodeFn encode_ggml;  // ggml's reference quantizer (quantize_row_*_ref), reproduced bit for bit
  DecodeFn decode;       // ggml's dequantize_row_* (same float operations, same results)
  // The search encoder: the same block format with lower squared error, never worse than
  // encode_ggml on any block; nullptr for types without one.
  EncodeFn encode_search;
  // The fast fit: the same block format at about encode_ggml's error with far fewer passes over
  // the data (what the kquant scheme's `rtn` writes); nullptr for types without one.
  EncodeFn encode_fast;
  // ggml's importance-weighted quantizer (quantize_q*_* with quant_weights: llama-quantize
  // --imatrix), row by row, bit for bit; nullptr for types without one here.
  ImatrixEncodeFn encode_imatrix = nullptr;
};

// Every type this library writes and reads, in ggml id order.
std::span<const TypeTraits> supported_types();

// The row of a type, or nullptr if not supported.
const TypeTraits* find_type(int32_t ggml_id);
const TypeTraits* find_type(std::string_view name);

// Bytes of n elements (n a multiple of block_size).
inline int64_t encoded_bytes(const TypeTraits& t, int64_t n) { return n / t.block_size * t.block_bytes; }

}  // namespace arrowquant::kernels::gguf
