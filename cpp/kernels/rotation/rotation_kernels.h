// The randomised Hadamard rotation of arrowquant's format version 2 (docs/format.md,
// "Rotation"): each block of 256 consecutive values of a row is multiplied by fixed random signs
// and transformed by a Walsh-Hadamard transform scaled by 1/16, which makes the transform its
// own inverse up to the signs. Heavy-tailed rows come out close to Gaussian, so the block codes
// that follow lose much less to outliers; decoding applies the inverse after the block decoder.
//
// Every implementation performs the same float32 additions and subtractions in the same stages
// (h = 1, 2, 4, ..., 128) and then multiplies by an exact power of two with a sign, so every
// ISA path (and a numpy decoder written from the document) gives the same bits.
//
// Pure functions: no allocation, no exceptions. `blocks` is a count of 256-value blocks, in place.
#pragma once

#include <cstdint>

#include "kernels/quant/quant_kernels.h"  // Isa

namespace arrowquant::kernels::rotation {

inline constexpr int kBlock = 256;

// The 256 signs as bits, least significant bit of byte 0 first: bit set = -1. These 32 bytes are
// the hex string 5c0fb783...478c of docs/format.md.
inline constexpr uint8_t kSignBits[32] = {
    0x5c, 0x0f, 0xb7, 0x83, 0xac, 0x8c, 0x7a, 0x2d, 0xb8, 0x45, 0x3a, 0x87, 0x53, 0x1c, 0xed, 0xaa,
    0x18, 0x5e, 0x57, 0xda, 0x8b, 0x34, 0xe7, 0xe5, 0x41, 0xcf, 0x9f, 0x20, 0x9a, 0x2c, 0x47, 0x8c};

using RotateFn = void (*)(float* values, int64_t blocks);

struct RotationKernels {
  RotateFn forward;  // x -> H(s * x) / 16   (the encoder's side)
  RotateFn inverse;  // y -> s * H(y) / 16   (the decoder's side)
};

// The kernels of an ISA path (the widest this build has at or below `isa`).
RotationKernels rotation_kernels(Isa isa);

}  // namespace arrowquant::kernels::rotation
