// AVX-512 (F, BW, VL, DQ) path; compiled with those flags, only called when the CPU has them.
// Same operations in the same order as the scalar reference, so the codes are identical.
// Tails use masked loads and stores instead of scalar loops.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/quant/quant_kernels.h"

namespace arrowquant::kernels::avx512 {

namespace {

// How far ahead of the min / max pass (its first read of the weights) to prefetch, in floats: the
// hardware prefetchers alone left a tensor streaming from memory at a third of the read bandwidth.
constexpr int64_t kPrefetchAhead = 1024;

__mmask16 first_lanes16(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

}  // namespace

#include "kernels/quant/pack_scalar_inl.h"

struct Ops {
  static void widen_to_f32(const uint16_t* src, ElementType type, int64_t n, float* dst) {
    int64_t i = 0;
    if (type == ElementType::kFloat16) {
      for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
      }
      if (i < n) {
        const __mmask16 m = first_lanes16(n - i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
      }
    } else {
      // bfloat16 is the top half of a float32: widen to 32 bits and shift left by 16.
      for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : first_lanes16(n - i);
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      }
    }
  }

  static bool min_max(const float* x, int64_t n, float* min_out, float* max_out) {
    const __m512 first = _mm512_set1_ps(x[0]);
    __m512 lo0 = first, hi0 = first, lo1 = first, hi1 = first;
    // A NaN is lost by min/max, so unordered compares are OR-ed into a mask; Inf shows in min/max.
    __mmask16 nan_lanes = 0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(x + i + kPrefetchAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(x + i + kPrefetchAhead + 16), _MM_HINT_T0);
      const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
      lo0 = _mm512_min_ps(lo0, a);
      hi0 = _mm512_max_ps(hi0, a);
      lo1 = _mm512_min_ps(lo1, b);
      hi1 = _mm512_max_ps(hi1, b);
      nan_lanes |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    }
    for (; i < n; i += 16) {
      // Missing lanes load x[0], which cannot change min or max.
      const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : first_lanes16(n - i);
      const __m512 a = _mm512_mask_loadu_ps(first, m, x + i);
      lo0 = _mm512_min_ps(lo0, a);
      hi0 = _mm512_max_ps(hi0, a);
      nan_lanes |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    }
    const float lo = _mm512_reduce_min_ps(_mm512_min_ps(lo0, lo1));
    const float hi = _mm512_reduce_max_ps(_mm512_max_ps(hi0, hi1));
    if (nan_lanes != 0 || !__builtin_isfinite(lo) || !__builtin_isfinite(hi)) return false;
    *min_out = lo;
    *max_out = hi;
    return true;
  }

  // Minimum and maximum of each of 16 consecutive groups of group_size elements (a multiple of
  // 16): one vector of partial results per group, then the 16 vectors reduced together, pairs of
  // vectors at a time (the even and odd lanes of each pair, so that after four levels lane g holds
  // group g), instead of 32 separate horizontal reductions. False if any element is NaN or
  // infinite: the caller then looks group by group.
  static bool min_max_16_groups(const float* x, int64_t group_size, float* lo_out, float* hi_out) {
    __m512 lo[16], hi[16];
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    __mmask16 finite = 0xFFFF;
    for (int g = 0; g < 16; ++g) {
      const float* p = x + g * group_size;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchAhead), _MM_HINT_T0);
      __m512 a = _mm512_loadu_ps(p);
      __m512 l = a, h = a;
      finite &= _mm512_cmp_ps_mask(_mm512_abs_ps(a), inf, _CMP_LT_OQ);
      for (int64_t i = 16; i < group_size; i += 16) {
        _mm_prefetch(reinterpret_cast<const char*>(p + i + kPrefetchAhead), _MM_HINT_T0);
        a = _mm512_loadu_ps(p + i);
        l = _mm512_min_ps(l, a);
        h = _mm512_max_ps(h, a);
        finite &= _mm512_cmp_ps_mask(_mm512_abs_ps(a), inf, _CMP_LT_OQ);
      }
      lo[g] = l;
      hi[g] = h;
    }
    if (finite != 0xFFFF) return false;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int width = 16; width > 1; width /= 2) {
      for (int k = 0; k < width / 2; ++k) {
        lo[k] = _mm512_min_ps(_mm512_permutex2var_ps(lo[2 * k], even, lo[2 * k + 1]),
                              _mm512_permutex2var_ps(lo[2 * k], odd, lo[2 * k + 1]));
        hi[k] = _mm512_max_ps(_mm512_permutex2var_ps(hi[2 * k], even, hi[2 * k + 1]),
                              _mm512_permutex2var_ps(hi[2 * k], odd, hi[2 * k + 1]));
      }
    }
    _mm512_storeu_ps(lo_out, lo[0]);
    _mm512_storeu_ps(hi_out, hi[0]);
    return true;
  }

  static void quantize_codes(const float* x, int64_t n, float offset, float scale, float bias,
                             float qmax, uint8_t* codes) {
    const __m512 voffset = _mm512_set1_ps(offset), vscale = _mm512_set1_ps(scale);
    const __m512 vbias = _mm512_set1_ps(bias), vqmax = _mm512_set1_ps(qmax), zero = _mm512_setzero_ps();
    const auto code = [&](__m512 v) {
      __m512 y = _mm512_add_ps(_mm512_div_ps(_mm512_sub_ps(v, voffset), vscale), vbias);
      y = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(y, zero), vqmax));
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {  // whole vectors unmasked: small groups are mostly these
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(code(_mm512_loadu_ps(x + i))));
    }
    if (i < n) {
      const __mmask16 m = first_lanes16(n - i);
      _mm512_mask_cvtepi32_storeu_epi8(codes + i, m, code(_mm512_maskz_loadu_ps(m, x + i)));
    }
  }

  static void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* packed) {
    int64_t i = 0;
    if (bits == 8) {
      memcpy(packed, codes, static_cast<size_t>(n));
      return;
    }
    if (bits == 4) {
      // In each 16-bit lane v = c_even | c_odd << 8; v | v >> 4 has c_even | c_odd << 4 in its
      // low byte (codes are < 16, so nothing else lands there); vpmovwb keeps that byte.
      for (; i + 64 <= n; i += 64) {
        const __m512i v = _mm512_loadu_si512(codes + i);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(packed + i / 2),
                            _mm512_cvtepi16_epi8(_mm512_or_si512(v, _mm512_srli_epi16(v, 4))));
      }
      pack_codes_scalar(codes + i, n - i, 4, packed + i / 2);
    } else {
      // In each 32-bit lane v = c0 | c1 << 8 | c2 << 16 | c3 << 24. t = v | v >> 6 puts c1 at bit 2
      // and c3 at bit 18; t | t >> 12 then brings c2 to bit 4 and c3 to bit 6. vpmovdb keeps byte 0.
      for (; i + 64 <= n; i += 64) {
        const __m512i v = _mm512_loadu_si512(codes + i);
        const __m512i t = _mm512_or_si512(v, _mm512_srli_epi32(v, 6));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(packed + i / 4),
                         _mm512_cvtepi32_epi8(_mm512_or_si512(t, _mm512_srli_epi32(t, 12))));
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
      // Byte b widened to a 16-bit lane; (b & 0x0F) | (b & 0xF0) << 4 = the two codes in order.
      const __m512i lo_mask = _mm512_set1_epi16(0x000F), hi_mask = _mm512_set1_epi16(0x00F0);
      for (; i + 64 <= n; i += 64) {
        const __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i / 2)));
        const __m512i c = _mm512_or_si512(_mm512_and_si512(b, lo_mask), _mm512_slli_epi16(_mm512_and_si512(b, hi_mask), 4));
        _mm512_storeu_si512(codes + i, c);
      }
      unpack_codes_scalar(packed + i / 2, n - i, 4, codes + i);
    } else {
      // Byte b widened to a 32-bit lane; b | b << 6 | b << 12 | b << 18 moves code j to bits
      // [8j, 8j + 2); the mask clears the rest.
      const __m512i mask = _mm512_set1_epi32(0x03030303);
      for (; i + 64 <= n; i += 64) {
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 4)));
        __m512i c = _mm512_or_si512(b, _mm512_slli_epi32(b, 6));
        c = _mm512_or_si512(c, _mm512_or_si512(_mm512_slli_epi32(b, 12), _mm512_slli_epi32(b, 18)));
        _mm512_storeu_si512(codes + i, _mm512_and_si512(c, mask));
      }
      unpack_codes_scalar(packed + i / 4, n - i, 2, codes + i);
    }
  }

  static void dequantize_codes(const uint8_t* codes, int64_t n, float scale, float zero_point, float* out) {
    const __m512 vscale = _mm512_set1_ps(scale), vzero_point = _mm512_set1_ps(zero_point);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {  // whole vectors unmasked: small groups are mostly these
      const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i))));
      _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_sub_ps(q, vzero_point), vscale));
    }
    if (i < n) {
      const __mmask16 m = first_lanes16(n - i);
      const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + i)));
      _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_sub_ps(q, vzero_point), vscale));
    }
  }

  // Lanes 0-15 of the scalar definition are one vector; the tail is a masked step (masked-off
  // lanes are left untouched).
  static float accumulate_error(const float* x, const float* y, int64_t n, float lanes[4][16]) {
    __m512 xx = _mm512_load_ps(lanes[0]), yy = _mm512_load_ps(lanes[1]);
    __m512 xy = _mm512_load_ps(lanes[2]), dd = _mm512_load_ps(lanes[3]);
    __m512 max_abs = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : first_lanes16(n - i);
      const __m512 a = _mm512_maskz_loadu_ps(m, x + i), b = _mm512_maskz_loadu_ps(m, y + i);
      const __m512 d = _mm512_sub_ps(a, b);
      xx = _mm512_mask_add_ps(xx, m, xx, _mm512_mul_ps(a, a));
      yy = _mm512_mask_add_ps(yy, m, yy, _mm512_mul_ps(b, b));
      xy = _mm512_mask_add_ps(xy, m, xy, _mm512_mul_ps(a, b));
      dd = _mm512_mask_add_ps(dd, m, dd, _mm512_mul_ps(d, d));
      max_abs = _mm512_max_ps(max_abs, _mm512_abs_ps(d));
    }
    _mm512_store_ps(lanes[0], xx);
    _mm512_store_ps(lanes[1], yy);
    _mm512_store_ps(lanes[2], xy);
    _mm512_store_ps(lanes[3], dd);
    return _mm512_reduce_max_ps(max_abs);
  }

  // The 16 lanes reduced by the scalar reference's halving tree.
  static double reduce_lanes(__m512 v) {
    const __m512d m8 = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                                     _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    const __m256d m4 = _mm256_add_pd(_mm512_castpd512_pd256(m8), _mm512_extractf64x4_pd(m8, 1));
    const __m128d m2 = _mm_add_pd(_mm256_castpd256_pd128(m4), _mm256_extractf128_pd(m4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(m2, _mm_unpackhi_pd(m2, m2)));
  }

  static void candidate_sums(const float* x, int64_t n, float inverse, float shift, float qmax, double sums[3]) {
    const __m512 vinverse = _mm512_set1_ps(inverse), vshift = _mm512_set1_ps(shift);
    const __m512 vqmax = _mm512_set1_ps(qmax), zero = _mm512_setzero_ps();
    __m512 sq = zero, sqq = zero, sxq = zero;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512 v = _mm512_loadu_ps(x + i);
      __m512 q = _mm512_roundscale_ps(_mm512_fmadd_ps(v, vinverse, vshift), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(q, zero), vqmax);
      sq = _mm512_add_ps(sq, q);
      sqq = _mm512_fmadd_ps(q, q, sqq);
      sxq = _mm512_fmadd_ps(v, q, sxq);
    }
    if (i < n) {  // masked-off lanes are left untouched
      const __mmask16 m = first_lanes16(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
      __m512 q = _mm512_roundscale_ps(_mm512_fmadd_ps(v, vinverse, vshift), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(q, zero), vqmax);
      sq = _mm512_mask_add_ps(sq, m, sq, q);
      sqq = _mm512_mask3_fmadd_ps(q, q, sqq, m);
      sxq = _mm512_mask3_fmadd_ps(v, q, sxq, m);
    }
    sums[0] = reduce_lanes(sq);
    sums[1] = reduce_lanes(sqq);
    sums[2] = reduce_lanes(sxq);
  }

  static void moments(const float* x, int64_t n, double sums[2]) {
    __m512 s = _mm512_setzero_ps(), ss = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : first_lanes16(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
      s = _mm512_mask_add_ps(s, m, s, v);
      ss = _mm512_mask_add_ps(ss, m, ss, _mm512_mul_ps(v, v));
    }
    sums[0] = reduce_lanes(s);
    sums[1] = reduce_lanes(ss);
  }

  static double decode_squared_error(const float* x, const uint8_t* codes, int64_t n, float scale, float zero_point) {
    const __m512 vscale = _mm512_set1_ps(scale), vzero_point = _mm512_set1_ps(zero_point);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : first_lanes16(n - i);
      const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + i)));
      const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_mul_ps(_mm512_sub_ps(q, vzero_point), vscale));
      acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(d, d));
    }
    return reduce_lanes(acc);
  }
};

#include "kernels/quant/quant_driver_inl.h"

}  // namespace arrowquant::kernels::avx512

namespace arrowquant::kernels {
const KernelTable& avx512_kernel_table() { return avx512::make_table("avx512"); }
}  // namespace arrowquant::kernels
