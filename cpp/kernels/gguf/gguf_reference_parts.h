// Pieces of the scalar reference (gguf_ggml_reference.cpp) that the lane kernels reuse as they
// are: per-super-block steps that are cheap next to the per-sub-block work the lanes do, and the
// error measure the search encoders compare blocks by.
#pragma once

#include <cstdint>

#include "kernels/gguf/gguf_kernels.h"

namespace arrowquant::kernels::gguf::reference_parts {

// The 12 bytes of Q4_K / Q5_K's eight 6-bit scales and mins (ggml's get_scale_min_k4 layout).
void pack_scales_mins(const uint8_t* ls, const uint8_t* lm, uint8_t* scales12);
// Squared error (double) of one encoded super-block against x, through `decode`.
double block_error(DecodeFn decode, const uint8_t* block, const float* x);

}  // namespace arrowquant::kernels::gguf::reference_parts
