// Format version 2's "kquant" scheme over whole tensors (docs/format.md): each row is padded with
// zeros to a multiple of 256, optionally rotated block by block (kernels/rotation), and encoded
// with the k-quant super-block coder of its bit width (ggml's block layouts, kernels/gguf). Work
// is cut into chunks of whole 256-value blocks, so the bytes never depend on the thread count.
// No Arrow, no Python; callers own every buffer.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "engine/quantize_engine.h"
#include "kernels/gguf/gguf_kernels.h"
#include "kernels/quant/quant_kernels.h"

namespace arrowquant::engine {

// Values per super-block: the unit of padding, rotation and encoding.
inline constexpr int64_t kKquantBlock = 256;

// The block coder of a bit width (2..6 -> Q2_K..Q6_K, 8 -> Q8_0), or nullptr for other widths.
const kernels::gguf::TypeTraits* kquant_type(int bits);

// Columns of a row once padded to whole super-blocks.
inline int64_t kquant_padded_cols(int64_t cols) { return (cols + kKquantBlock - 1) / kKquantBlock * kKquantBlock; }

// Bytes of a rows x cols tensor (cols padded).
int64_t kquant_encoded_bytes(const kernels::gguf::TypeTraits& type, int64_t rows, int64_t cols);

struct KquantEncodeJob {
  const void* weights = nullptr;  // rows * cols elements of element_type, row-major
  kernels::ElementType element_type = kernels::ElementType::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
  const kernels::gguf::TypeTraits* type = nullptr;
  bool rotate = false;
  bool search = false;            // the type's search encoder instead of its fast fit
  uint8_t* out = nullptr;         // kquant_encoded_bytes(...) bytes
};

struct KquantDecodeJob {
  const uint8_t* encoded = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const kernels::gguf::TypeTraits* type = nullptr;
  bool rotate = false;
  float* out = nullptr;           // rows * cols floats
};

// Encodes every job. On a NaN / Inf returns where the first one is (flattened index in the
// tensor); outputs are then unspecified. With error_stats, also compares each tensor with its
// decoded values (decoded in the same pass; the sums do not depend on the thread count).
std::optional<NonFiniteValue> kquant_encode(std::span<const KquantEncodeJob> jobs, int num_threads,
                                            std::vector<kernels::ErrorStats>* error_stats = nullptr);

void kquant_decode(std::span<const KquantDecodeJob> jobs, int num_threads);

}  // namespace arrowquant::engine
