// The scalar reference: the definition every SIMD path must match byte for byte.
#include <cstdint>
#include <cstring>

#include "kernels/quant/quant_kernels.h"

namespace arrowquant::kernels::scalar {

namespace {

// IEEE binary16 -> binary32, exact for every input (subnormals renormalised, Inf/NaN kept).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal half: shift the leading one up to the implicit bit, lowering the exponent.
    uint32_t e = 113u;  // 127 - 15 + 1
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

#include "kernels/quant/pack_scalar_inl.h"

struct Ops {
  static void widen_to_f32(const uint16_t* src, ElementType type, int64_t n, float* dst) {
    if (type == ElementType::kFloat16) {
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = bfloat16_to_float(src[i]);
    }
  }

  static bool min_max(const float* x, int64_t n, float* min_out, float* max_out) {
    float lo = x[0], hi = x[0];
    for (int64_t i = 0; i < n; ++i) {
      const float v = x[i];
      if (!(v - v == 0.0f)) return false;  // Inf - Inf and NaN - NaN are NaN
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    *min_out = lo;
    *max_out = hi;
    return true;
  }

  static void quantize_codes(const float* x, int64_t n, float offset, float scale, float bias,
                             float qmax, uint8_t* codes) {
    for (int64_t i = 0; i < n; ++i) {
      float y = __builtin_roundevenf((x[i] - offset) / scale + bias);
      y = y < 0.0f ? 0.0f : (y > qmax ? qmax : y);
      codes[i] = static_cast<uint8_t>(y);
    }
  }

  static void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* packed) {
    pack_codes_scalar(codes, n, bits, packed);
  }

  static void unpack_codes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
    unpack_codes_scalar(packed, n, bits, codes);
  }

  static void dequantize_codes(const uint8_t* codes, int64_t n, float scale, float zero_point, float* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = (static_cast<float>(codes[i]) - zero_point) * scale;
  }

  // Adds x^2, y^2, x*y, (x-y)^2 in float32 to lanes[k][i % 16]; returns max |x - y|.
  static float accumulate_error(const float* x, const float* y, int64_t n, float lanes[4][16]) {
    float max_abs = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float a = x[i], b = y[i], d = a - b;
      const int lane = static_cast<int>(i & 15);
      lanes[0][lane] += a * a;
      lanes[1][lane] += b * b;
      lanes[2][lane] += a * b;
      lanes[3][lane] += d * d;
      const float abs_d = d < 0.0f ? -d : d;
      max_abs = abs_d > max_abs ? abs_d : max_abs;
    }
    return max_abs;
  }

  // The search's sums: float32 lane i % 16, then the 16 lanes to float64 by a fixed halving tree
  // (l[i] + l[i+8], then + [i+4], + [i+2], + [i+1]) that a vector unit does in four adds.
  static double reduce_lanes(const float l[16]) {
    double m[8];
    for (int i = 0; i < 8; ++i) m[i] = static_cast<double>(l[i]) + static_cast<double>(l[i + 8]);
    for (int i = 0; i < 4; ++i) m[i] += m[i + 4];
    for (int i = 0; i < 2; ++i) m[i] += m[i + 2];
    return m[0] + m[1];
  }

  // Codes q = clamp(rne(fma(x, inverse, shift)), 0, qmax); sums[0] = Σq, sums[1] = Σq² (lane sums
  // fma(q, q, .)), sums[2] = Σxq (fma(x, q, .)). Explicit fused multiply-adds (one rounding each, so
  // every ISA agrees) halve the work of the search's hot loop.
  static void candidate_sums(const float* x, int64_t n, float inverse, float shift, float qmax, double sums[3]) {
    float lanes[3][16] = {};
    for (int64_t i = 0; i < n; ++i) {
      float q = __builtin_roundevenf(__builtin_fmaf(x[i], inverse, shift));
      q = q < 0.0f ? 0.0f : (q > qmax ? qmax : q);
      lanes[0][i & 15] += q;
      lanes[1][i & 15] = __builtin_fmaf(q, q, lanes[1][i & 15]);
      lanes[2][i & 15] = __builtin_fmaf(x[i], q, lanes[2][i & 15]);
    }
    for (int k = 0; k < 3; ++k) sums[k] = reduce_lanes(lanes[k]);
  }

  // sums[0] = Σx, sums[1] = Σx² (x * x then add), lanes as above.
  static void moments(const float* x, int64_t n, double sums[2]) {
    float lanes[2][16] = {};
    for (int64_t i = 0; i < n; ++i) {
      lanes[0][i & 15] += x[i];
      lanes[1][i & 15] += x[i] * x[i];
    }
    sums[0] = reduce_lanes(lanes[0]);
    sums[1] = reduce_lanes(lanes[1]);
  }

  // Σ(x - (q - zero_point) * scale)^2, lanes as above.
  static double decode_squared_error(const float* x, const uint8_t* codes, int64_t n, float scale, float zero_point) {
    float lanes[16] = {};
    for (int64_t i = 0; i < n; ++i) {
      const float d = x[i] - (static_cast<float>(codes[i]) - zero_point) * scale;
      lanes[i & 15] += d * d;
    }
    return reduce_lanes(lanes);
  }
};

#include "kernels/quant/quant_driver_inl.h"

}  // namespace arrowquant::kernels::scalar

namespace arrowquant::kernels {
const KernelTable& scalar_kernel_table() { return scalar::make_table("scalar"); }
}  // namespace arrowquant::kernels
