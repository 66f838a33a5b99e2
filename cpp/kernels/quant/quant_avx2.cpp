// AVX2 + FMA + F16C path (compiled with -mavx2 -mfma -mf16c; only called when the CPU has them).
// Same operations in the same order as the scalar reference (sub, div, add, round-to-nearest-even,
// clamp), so the codes are identical. FMA appears only where the scalar reference uses an explicit
// fmaf too (the search's candidate loop); the compiler never contracts (-ffp-contract=off).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant/quant_kernels.h"

namespace arrowquant::kernels::avx2 {

namespace {

// How far ahead of the min / max pass (its first read of the weights) to prefetch, in floats: the
// hardware prefetchers alone left a tensor streaming from memory at a third of the read bandwidth.
constexpr int64_t kPrefetchAhead = 1024;

// Lanes [0, n) of a float vector; n in [1, 8]. Missing lanes repeat x[0] so min/max ignore them.
__m256 load_partial(const float* x, int64_t n) {
  alignas(32) float buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = i < n ? x[i] : x[0];
  return _mm256_load_ps(buf);
}

}  // namespace

#include "kernels/quant/pack_scalar_inl.h"

struct Ops {
  static void widen_to_f32(const uint16_t* src, ElementType type, int64_t n, float* dst) {
    int64_t i = 0;
    if (type == ElementType::kFloat16) {
      for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
      }
      if (i < n) {
        alignas(16) uint16_t h[8] = {};
        memcpy(h, src + i, static_cast<size_t>(n - i) * 2);
        alignas(32) float f[8];
        _mm256_store_ps(f, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h))));
        memcpy(dst + i, f, static_cast<size_t>(n - i) * 4);
      }
    } else {
      // bfloat16 is the top half of a float32: widen to 32 bits and shift left by 16.
      for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
      for (; i < n; ++i) {
        const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
        memcpy(dst + i, &bits, 4);
      }
    }
  }

  // As the AVX-512 path's: per group a vector of partial minima and maxima, then the 16 vectors
  // reduced pairwise (even and odd lanes of each pair: within 128-bit halves by shuffles, the halves
  // put in order by one permute after the min / max), so that after three levels lane j of the
  // two results holds group j and j + 8. False if any element is NaN or infinite.
  static bool min_max_16_groups(const float* x, int64_t group_size, float* lo_out, float* hi_out) {
    __m256 lo[16], hi[16];
    const __m256 zero = _mm256_setzero_ps();
    __m256 bad = zero;  // x * 0 is NaN exactly for NaN and Inf
    for (int g = 0; g < 16; ++g) {
      const float* p = x + g * group_size;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchAhead), _MM_HINT_T0);
      __m256 a = _mm256_loadu_ps(p);
      __m256 l = a, h = a;
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_mul_ps(a, zero), zero, _CMP_UNORD_Q));
      for (int64_t i = 8; i < group_size; i += 8) {
        if (i % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(p + i + kPrefetchAhead), _MM_HINT_T0);
        a = _mm256_loadu_ps(p + i);
        l = _mm256_min_ps(l, a);
        h = _mm256_max_ps(h, a);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_mul_ps(a, zero), zero, _CMP_UNORD_Q));
      }
      lo[g] = l;
      hi[g] = h;
    }
    if (_mm256_movemask_ps(bad) != 0) return false;
    const auto in_order = [](__m256 v) {
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
    };
    for (int width = 16; width > 2; width /= 2) {
      for (int k = 0; k < width / 2; ++k) {
        const __m256 a = lo[2 * k], b = lo[2 * k + 1], c = hi[2 * k], d = hi[2 * k + 1];
        lo[k] = in_order(_mm256_min_ps(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xDD)));
        hi[k] = in_order(_mm256_max_ps(_mm256_shuffle_ps(c, d, 0x88), _mm256_shuffle_ps(c, d, 0xDD)));
      }
    }
    _mm256_storeu_ps(lo_out, lo[0]);
    _mm256_storeu_ps(lo_out + 8, lo[1]);
    _mm256_storeu_ps(hi_out, hi[0]);
    _mm256_storeu_ps(hi_out + 8, hi[1]);
    return true;
  }

  static bool min_max(const float* x, int64_t n, float* min_out, float* max_out) {
    __m256 lo0 = _mm256_set1_ps(x[0]), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    // x * 0 is +-0 for finite x and NaN for NaN or Inf; OR-ing the unordered compares keeps a flag.
    __m256 bad = _mm256_setzero_ps();
    const __m256 zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      _mm_prefetch(reinterpret_cast<const char*>(x + i + kPrefetchAhead), _MM_HINT_T0);
      const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
      lo0 = _mm256_min_ps(lo0, a);
      hi0 = _mm256_max_ps(hi0, a);
      lo1 = _mm256_min_ps(lo1, b);
      hi1 = _mm256_max_ps(hi1, b);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_mul_ps(a, zero), _mm256_mul_ps(b, zero), _CMP_UNORD_Q));
    }
    for (; i < n; i += 8) {
      const __m256 a = (n - i >= 8) ? _mm256_loadu_ps(x + i) : load_partial(x + i, n - i);
      lo0 = _mm256_min_ps(lo0, a);
      hi0 = _mm256_max_ps(hi0, a);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_mul_ps(a, zero), zero, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(bad) != 0) return false;
    lo0 = _mm256_min_ps(lo0, lo1);
    hi0 = _mm256_max_ps(hi0, hi1);
    __m128 lo = _mm_min_ps(_mm256_castps256_ps128(lo0), _mm256_extractf128_ps(lo0, 1));
    __m128 hi = _mm_max_ps(_mm256_castps256_ps128(hi0), _mm256_extractf128_ps(hi0, 1));
    lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
    hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
    lo = _mm_min_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    hi = _mm_max_ss(hi, _mm_shuffle_ps(hi, hi, 1));
    *min_out = _mm_cvtss_f32(lo);
    *max_out = _mm_cvtss_f32(hi);
    return true;
  }

  static void quantize_codes(const float* x, int64_t n, float offset, float scale, float bias,
                             float qmax, uint8_t* codes) {
    const __m256 voffset = _mm256_set1_ps(offset), vscale = _mm256_set1_ps(scale);
    const __m256 vbias = _mm256_set1_ps(bias), vqmax = _mm256_set1_ps(qmax), zero = _mm256_setzero_ps();
    // Gathers byte 0 of each 32-bit lane into the low 4 bytes of each 128-bit half.
    const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      __m256 y = _mm256_add_ps(_mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), voffset), vscale), vbias);
      y = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      y = _mm256_min_ps(_mm256_max_ps(y, zero), vqmax);
      const __m256i q = _mm256_shuffle_epi8(_mm256_cvttps_epi32(y), low_bytes);
      const uint32_t lo = static_cast<uint32_t>(_mm256_extract_epi32(q, 0));
      const uint32_t hi = static_cast<uint32_t>(_mm256_extract_epi32(q, 4));
      const uint64_t eight = static_cast<uint64_t>(lo) | (static_cast<uint64_t>(hi) << 32);
      memcpy(codes + i, &eight, 8);
    }
    for (; i < n; ++i) {
      __m128 y = _mm_add_ss(_mm_div_ss(_mm_sub_ss(_mm_set_ss(x[i]), _mm_set_ss(offset)), _mm_set_ss(scale)),
                            _mm_set_ss(bias));
      y = _mm_round_ss(y, y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      y = _mm_min_ss(_mm_max_ss(y, _mm_setzero_ps()), _mm_set_ss(qmax));
      codes[i] = static_cast<uint8_t>(_mm_cvttss_si32(y));
    }
  }

  static void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* packed) {
    int64_t i = 0;
    if (bits == 8) {
      memcpy(packed, codes, static_cast<size_t>(n));
      return;
    }
    if (bits == 4) {
      // maddubs multiplies unsigned code bytes by signed weights and adds pairs:
      // (c_even * 1 + c_odd * 16) in each 16-bit lane, then pack 16 -> 8 bits.
      const __m256i weights = _mm256_set1_epi16(0x1001);
      for (; i + 64 <= n; i += 64) {
        const __m256i a = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i)), weights);
        const __m256i b = _mm256_maddubs_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i + 32)), weights);
        // packus interleaves 128-bit halves (a.lo, b.lo, a.hi, b.hi); the permute restores order.
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + i / 2), p);
      }
      pack_codes_scalar(codes + i, n - i, 4, packed + i / 2);
    } else {
      // 2 bits: maddubs makes c0 + 4 c1 per 16-bit lane, madd makes (c0 + 4 c1) + 16 (c2 + 4 c3)
      // per 32-bit lane; then the low byte of each 32-bit lane is gathered.
      const __m256i w8 = _mm256_set1_epi16(0x0401), w16 = _mm256_set1_epi32(0x00100001);
      const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
      for (; i + 32 <= n; i += 32) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i));
        const __m256i q = _mm256_shuffle_epi8(_mm256_madd_epi16(_mm256_maddubs_epi16(c, w8), w16), low_bytes);
        const uint64_t eight = static_cast<uint64_t>(static_cast<uint32_t>(_mm256_extract_epi32(q, 0))) |
                               (static_cast<uint64_t>(static_cast<uint32_t>(_mm256_extract_epi32(q, 4))) << 32);
        memcpy(packed + i / 4, &eight, 8);
      }
      pack_codes_scalar(codes + i, n - i, 2, packed + i / 4);
    }
  }

  static void unpack_codes(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) {
    int64_t i = 0;
    if (bits == 8) {
      memcpy(codes, packed, static_cast<size_t>(n));
      return;
    }
    if (bits == 4) {
      // Each byte widened to a 16-bit lane b; (b & 0x0F) | ((b & 0xF0) << 4) puts the low nibble
      // in the lane's low byte and the high nibble in its high byte: two codes, in order.
      const __m256i lo_mask = _mm256_set1_epi16(0x000F), hi_mask = _mm256_set1_epi16(0x00F0);
      for (; i + 32 <= n; i += 32) {
        const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2)));
        const __m256i c = _mm256_or_si256(_mm256_and_si256(b, lo_mask), _mm256_slli_epi16(_mm256_and_si256(b, hi_mask), 4));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), c);
      }
      unpack_codes_scalar(packed + i / 2, n - i, 4, codes + i);
    } else {
      // Each byte widened to a 32-bit lane b; b | b << 6 | b << 12 | b << 18 moves code j to
      // bits [8j, 8j + 2), and the mask clears the rest: four codes, in order.
      const __m256i mask = _mm256_set1_epi32(0x03030303);
      for (; i + 32 <= n; i += 32) {
        int64_t eight;
        memcpy(&eight, packed + i / 4, 8);
        const __m256i b = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(eight));
        __m256i c = _mm256_or_si256(b, _mm256_slli_epi32(b, 6));
        c = _mm256_or_si256(c, _mm256_or_si256(_mm256_slli_epi32(b, 12), _mm256_slli_epi32(b, 18)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_and_si256(c, mask));
      }
      unpack_codes_scalar(packed + i / 4, n - i, 2, codes + i);
    }
  }

  static void dequantize_codes(const uint8_t* codes, int64_t n, float scale, float zero_point, float* out) {
    const __m256 vscale = _mm256_set1_ps(scale), vzero_point = _mm256_set1_ps(zero_point);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      int64_t eight;
      memcpy(&eight, codes + i, 8);
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(eight)));
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_sub_ps(q, vzero_point), vscale));
    }
    for (; i < n; ++i) {
      const __m128 q = _mm_set_ss(static_cast<float>(codes[i]));
      out[i] = _mm_cvtss_f32(_mm_mul_ss(_mm_sub_ss(q, _mm_set_ss(zero_point)), _mm_set_ss(scale)));
    }
  }

  // Lanes 0-7 and 8-15 of the scalar definition are two vectors; the tail goes element-wise.
  static float accumulate_error(const float* x, const float* y, int64_t n, float lanes[4][16]) {
    __m256 acc[4][2];
    for (int k = 0; k < 4; ++k) {
      acc[k][0] = _mm256_load_ps(lanes[k]);
      acc[k][1] = _mm256_load_ps(lanes[k] + 8);
    }
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 max_abs = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      for (int h = 0; h < 2; ++h) {
        const __m256 a = _mm256_loadu_ps(x + i + 8 * h), b = _mm256_loadu_ps(y + i + 8 * h);
        const __m256 d = _mm256_sub_ps(a, b);
        acc[0][h] = _mm256_add_ps(acc[0][h], _mm256_mul_ps(a, a));
        acc[1][h] = _mm256_add_ps(acc[1][h], _mm256_mul_ps(b, b));
        acc[2][h] = _mm256_add_ps(acc[2][h], _mm256_mul_ps(a, b));
        acc[3][h] = _mm256_add_ps(acc[3][h], _mm256_mul_ps(d, d));
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign, d));
      }
    }
    for (int k = 0; k < 4; ++k) {
      _mm256_store_ps(lanes[k], acc[k][0]);
      _mm256_store_ps(lanes[k] + 8, acc[k][1]);
    }
    alignas(32) float m[8];
    _mm256_store_ps(m, max_abs);
    float result = 0.0f;
    for (float v : m) result = v > result ? v : result;
    for (; i < n; ++i) {
      const int lane = static_cast<int>(i & 15);
      const __m128 a = _mm_set_ss(x[i]), b = _mm_set_ss(y[i]), d = _mm_sub_ss(a, b);
      lanes[0][lane] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[0][lane]), _mm_mul_ss(a, a)));
      lanes[1][lane] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[1][lane]), _mm_mul_ss(b, b)));
      lanes[2][lane] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[2][lane]), _mm_mul_ss(a, b)));
      lanes[3][lane] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[3][lane]), _mm_mul_ss(d, d)));
      const float abs_d = _mm_cvtss_f32(_mm_andnot_ps(_mm_set_ss(-0.0f), d));
      result = abs_d > result ? abs_d : result;
    }
    return result;
  }

  // Lanes 0-7 in a, 8-15 in b, reduced by the scalar reference's halving tree.
  static double reduce_lanes(__m256 a, __m256 b) {
    const __m256d lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
    const __m256d hi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
    const __m256d m4 = _mm256_add_pd(lo, hi);                                                   // m[i] + m[i+4]
    const __m128d m2 = _mm_add_pd(_mm256_castpd256_pd128(m4), _mm256_extractf128_pd(m4, 1));  // + m[i+2]
    return _mm_cvtsd_f64(_mm_add_sd(m2, _mm_unpackhi_pd(m2, m2)));
  }

  static void candidate_sums(const float* x, int64_t n, float inverse, float shift, float qmax, double sums[3]) {
    const __m256 vinverse = _mm256_set1_ps(inverse), vshift = _mm256_set1_ps(shift);
    const __m256 vqmax = _mm256_set1_ps(qmax), zero = _mm256_setzero_ps();
    __m256 acc[3][2];
    for (int k = 0; k < 3; ++k) acc[k][0] = acc[k][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      for (int h = 0; h < 2; ++h) {
        const __m256 v = _mm256_loadu_ps(x + i + 8 * h);
        __m256 q = _mm256_round_ps(_mm256_fmadd_ps(v, vinverse, vshift), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_min_ps(_mm256_max_ps(q, zero), vqmax);
        acc[0][h] = _mm256_add_ps(acc[0][h], q);
        acc[1][h] = _mm256_fmadd_ps(q, q, acc[1][h]);
        acc[2][h] = _mm256_fmadd_ps(v, q, acc[2][h]);
      }
    }
    if (i < n) {
      alignas(32) float lanes[3][16];
      for (int k = 0; k < 3; ++k) {
        _mm256_store_ps(lanes[k], acc[k][0]);
        _mm256_store_ps(lanes[k] + 8, acc[k][1]);
      }
      for (; i < n; ++i) {
        const __m128 v = _mm_set_ss(x[i]);
        __m128 q = _mm_fmadd_ss(v, _mm_set_ss(inverse), _mm_set_ss(shift));
        q = _mm_round_ss(q, q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm_min_ss(_mm_max_ss(q, _mm_setzero_ps()), _mm_set_ss(qmax));
        const int lane = static_cast<int>(i & 15);
        lanes[0][lane] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[0][lane]), q));
        lanes[1][lane] = _mm_cvtss_f32(_mm_fmadd_ss(q, q, _mm_set_ss(lanes[1][lane])));
        lanes[2][lane] = _mm_cvtss_f32(_mm_fmadd_ss(v, q, _mm_set_ss(lanes[2][lane])));
      }
      for (int k = 0; k < 3; ++k) {
        acc[k][0] = _mm256_load_ps(lanes[k]);
        acc[k][1] = _mm256_load_ps(lanes[k] + 8);
      }
    }
    for (int k = 0; k < 3; ++k) sums[k] = reduce_lanes(acc[k][0], acc[k][1]);
  }

  static void moments(const float* x, int64_t n, double sums[2]) {
    __m256 s[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, ss[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      for (int h = 0; h < 2; ++h) {
        const __m256 v = _mm256_loadu_ps(x + i + 8 * h);
        s[h] = _mm256_add_ps(s[h], v);
        ss[h] = _mm256_add_ps(ss[h], _mm256_mul_ps(v, v));
      }
    }
    if (i < n) {
      alignas(32) float lanes[2][16];
      _mm256_store_ps(lanes[0], s[0]);
      _mm256_store_ps(lanes[0] + 8, s[1]);
      _mm256_store_ps(lanes[1], ss[0]);
      _mm256_store_ps(lanes[1] + 8, ss[1]);
      for (; i < n; ++i) {
        const __m128 v = _mm_set_ss(x[i]);
        lanes[0][i & 15] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[0][i & 15]), v));
        lanes[1][i & 15] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[1][i & 15]), _mm_mul_ss(v, v)));
      }
      s[0] = _mm256_load_ps(lanes[0]);
      s[1] = _mm256_load_ps(lanes[0] + 8);
      ss[0] = _mm256_load_ps(lanes[1]);
      ss[1] = _mm256_load_ps(lanes[1] + 8);
    }
    sums[0] = reduce_lanes(s[0], s[1]);
    sums[1] = reduce_lanes(ss[0], ss[1]);
  }

  static double decode_squared_error(const float* x, const uint8_t* codes, int64_t n, float scale, float zero_point) {
    const __m256 vscale = _mm256_set1_ps(scale), vzero_point = _mm256_set1_ps(zero_point);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      for (int h = 0; h < 2; ++h) {
        int64_t eight;
        memcpy(&eight, codes + i + 8 * h, 8);
        const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(eight)));
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8 * h), _mm256_mul_ps(_mm256_sub_ps(q, vzero_point), vscale));
        acc[h] = _mm256_add_ps(acc[h], _mm256_mul_ps(d, d));
      }
    }
    if (i < n) {
      alignas(32) float lanes[16];
      _mm256_store_ps(lanes, acc[0]);
      _mm256_store_ps(lanes + 8, acc[1]);
      for (; i < n; ++i) {
        const __m128 y = _mm_mul_ss(_mm_sub_ss(_mm_set_ss(static_cast<float>(codes[i])), _mm_set_ss(zero_point)), _mm_set_ss(scale));
        const __m128 d = _mm_sub_ss(_mm_set_ss(x[i]), y);
        lanes[i & 15] = _mm_cvtss_f32(_mm_add_ss(_mm_set_ss(lanes[i & 15]), _mm_mul_ss(d, d)));
      }
      acc[0] = _mm256_load_ps(lanes);
      acc[1] = _mm256_load_ps(lanes + 8);
    }
    return reduce_lanes(acc[0], acc[1]);
  }
};

#include "kernels/quant/quant_driver_inl.h"

}  // namespace arrowquant::kernels::avx2

namespace arrowquant::kernels {
const KernelTable& avx2_kernel_table() { return avx2::make_table("avx2"); }
}  // namespace arrowquant::kernels
