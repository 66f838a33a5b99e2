// One definition of the rotation, compiled once per ISA translation unit (each in its own
// namespace, with its own -m flags and its own vector width kLanes): GCC vector extensions, so
// the same source becomes SSE2, AVX2 or AVX-512 code. Every path performs the same float32
// additions and subtractions (a + (-b) is exactly a - b in IEEE arithmetic, and addition is
// commutative), so the results are identical. Included by rotation_{baseline,avx2,avx512}.cpp
// inside their namespace, after defining kLanes.

static_assert(kBlock % kLanes == 0 && (kLanes & (kLanes - 1)) == 0, "lanes must be a power of two dividing 256");

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Index __attribute__((vector_size(kLanes * sizeof(float))));
inline constexpr int kVectors = kBlock / kLanes;

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

// Lane j's partner (j ^ h) and its sign in the butterfly (+1 where bit h of j is clear, -1 where
// set), for the stages that stay inside one vector (h < kLanes).
template <int h, int... J>
constexpr Index partner(std::integer_sequence<int, J...>) {
  return Index{(J ^ h)...};
}
template <int h, int... J>
constexpr Vec butterfly_sign(std::integer_sequence<int, J...>) {
  return Vec{((J & h) ? -1.0f : 1.0f)...};
}

// z[i] + z[i + h] where bit h of i is clear, z[i - h] - z[i] where it is set.
template <int h>
inline void in_vector_stage(Vec* v) {
  if constexpr (h < kLanes) {
    constexpr Index p = partner<h>(std::make_integer_sequence<int, kLanes>());
    constexpr Vec s = butterfly_sign<h>(std::make_integer_sequence<int, kLanes>());
    for (int r = 0; r < kVectors; ++r) v[r] = __builtin_shuffle(v[r], p) + v[r] * s;
    in_vector_stage<h * 2>(v);
  }
}

inline void cross_vector_stages(Vec* v) {
  for (int step = 1; step < kVectors; step *= 2) {  // h = step * kLanes
    for (int base = 0; base < kVectors; base += 2 * step) {
      for (int r = base; r < base + step; ++r) {
        const Vec a = v[r], b = v[r + step];
        v[r] = a + b;
        v[r + step] = a - b;
      }
    }
  }
}

// The unscaled Walsh-Hadamard transform of one block, stages h = 1, 2, ..., 128 in order.
inline void walsh_hadamard_256(Vec* v) {
  if constexpr (kLanes > 1) in_vector_stage<1>(v);
  cross_vector_stages(v);
}

inline void load(const float* z, const float* multiplier, Vec* v) {
  for (int r = 0; r < kVectors; ++r) {
    Vec x, m;
    __builtin_memcpy(&x, z + r * kLanes, sizeof(Vec));
    if (multiplier != nullptr) {
      __builtin_memcpy(&m, multiplier + r * kLanes, sizeof(Vec));
      x *= m;
    }
    v[r] = x;
  }
}

inline void store(const Vec* v, const float* multiplier, float* z) {
  for (int r = 0; r < kVectors; ++r) {
    Vec m, x = v[r];
    __builtin_memcpy(&m, multiplier + r * kLanes, sizeof(Vec));
    x *= m;
    __builtin_memcpy(z + r * kLanes, &x, sizeof(Vec));
  }
}

alignas(64) inline constexpr float kSixteenth[kBlock] = {
#define ARROWQUANT_16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
    ARROWQUANT_16(ARROWQUANT_16(0.0625f))
#undef ARROWQUANT_16
};

void forward(float* values, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    float* z = values + b * kBlock;
    Vec v[kVectors];
    load(z, kSigns.unit, v);      // s * x (exact)
    walsh_hadamard_256(v);
    store(v, kSixteenth, z);      // / 16 (exact)
  }
}

void inverse(float* values, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    float* z = values + b * kBlock;
    Vec v[kVectors];
    load(z, nullptr, v);
    walsh_hadamard_256(v);
    store(v, kSigns.scaled, z);   // * s / 16 (exact)
  }
}
