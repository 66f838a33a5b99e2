// Pieces of the scalar reference (gguf_ggml_reference.cpp) that the lane kernels reuse as they
// are: per-super-block steps that are cheap next to the per-sub-block work the lanes do, and the
// error measure the search encoders compare blocks by.
#pragma once

#include <cstdint>

#include "kernels/gguf/gguf_kernels.h"

namespace arrowquant::kernels::gguf::reference_parts {

// ggml's make_qp_quants: n non-negative values to nmax-level codes with one scale, weighted.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights);
// Squared error (double) of one encoded super-block against x, through `decode`.
double block_error(DecodeFn decode, const uint8_t* block, const float* x);
// ggml's quantize_row_q{3,6}_K_impl with an all-ones importance matrix: one super-block.
void encode_q3_K_weighted_block(const float* x, uint8_t* out);
void encode_q6_K_weighted_block(const float* x, uint8_t* out);

}  // namespace arrowquant::kernels::gguf::reference_parts
