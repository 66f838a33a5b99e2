// One definition of the rotation, compiled once per ISA translation unit (each in its own
// namespace, with its own -m flags): the compiler vectorises the butterflies; the arithmetic is
// the same additions and subtractions on every path, so the results are identical.
// Included by rotation_{baseline,avx2,avx512}.cpp inside their namespace.

// The signs as floats (+-1) and times 1/16 (+-0.0625): multiplying by either is exact.
struct Signs {
  float unit[kBlock];
  float scaled[kBlock];
  constexpr Signs() : unit(), scaled() {
    for (int i = 0; i < kBlock; ++i) {
      const bool negative = (kSignBits[i / 8] >> (i % 8)) & 1;
      unit[i] = negative ? -1.0f : 1.0f;
      scaled[i] = negative ? -0.0625f : 0.0625f;
    }
  }
};
inline constexpr Signs kSigns{};

// The unscaled Walsh-Hadamard transform of one block, stages h = 1, 2, ..., 128; each stage
// replaces (a, b) = (z[i], z[i + h]) with (a + b, a - b) for every i whose bit h is clear.
inline void walsh_hadamard_256(float* __restrict z) {
  for (int h = 1; h < kBlock; h *= 2) {
    for (int base = 0; base < kBlock; base += 2 * h) {
      for (int i = base; i < base + h; ++i) {
        const float a = z[i], b = z[i + h];
        z[i] = a + b;
        z[i + h] = a - b;
      }
    }
  }
}

void forward(float* values, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    float* z = values + b * kBlock;
    for (int i = 0; i < kBlock; ++i) z[i] *= kSigns.unit[i];
    walsh_hadamard_256(z);
    for (int i = 0; i < kBlock; ++i) z[i] *= 0.0625f;
  }
}

void inverse(float* values, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    float* z = values + b * kBlock;
    walsh_hadamard_256(z);
    for (int i = 0; i < kBlock; ++i) z[i] *= kSigns.scaled[i];
  }
}
