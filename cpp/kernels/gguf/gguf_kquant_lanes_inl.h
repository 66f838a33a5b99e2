// ggml's reference Q4_K / Q5_K quantizer with one 32-weight sub-block per SIMD lane.
//
// Included inside a per-ISA namespace by gguf_avx2.cpp (AQ_LANES 8: one super-block per call)
// and gguf_avx512.cpp (AQ_LANES 16: two super-blocks). Every lane runs exactly the float
// operations of the scalar reference (gguf_ggml_reference.cpp: make_qkx2_quants, kquant_scales)
// for its own sub-block, in the same order, so the bytes are ggml's: vectorising *across*
// sub-blocks never reorders a sum *within* one. Branches of the reference become per-lane
// selects; lanes whose branch the reference would not take compute throw-away values (possibly
// Inf or NaN, never trapped) that the selects discard. Compiled without FMA contraction.
//
// Needs, before inclusion: <algorithm>, <cmath>, <cstdint>, <cstring>, <immintrin.h>,
// "kernels/common/float16.h".

using VF = float __attribute__((vector_size(4 * AQ_LANES)));
using VI = int32_t __attribute__((vector_size(4 * AQ_LANES)));
constexpr int kLanes = AQ_LANES;
// 16 consecutive values (one register on AVX-512, split by the compiler on narrower ISAs).
using V16F = float __attribute__((vector_size(64)));
using V16I = int32_t __attribute__((vector_size(64)));
using V16B = uint8_t __attribute__((vector_size(16)));
constexpr int kSuperBlocksPerCall = AQ_LANES / 8;

inline VI nearest_int_lanes(VF f) {
  const VF val = f + 12582912.f;
  const VI i = __builtin_bit_cast(VI, val);
  return (i & 0x007fffff) - 0x00400000;
}

inline VI clamp_lanes(VI l, int lo, int hi) {
  l = l < lo ? VI{} + lo : l;
  return l > hi ? VI{} + hi : l;
}

inline VF to_float(VI i) { return __builtin_convertvector(i, VF); }

inline VF abs_lanes(VF v) {
  return __builtin_bit_cast(VF, __builtin_bit_cast(VI, v) & 0x7fffffff);
}

// a > b ? a : b and a < b ? a : b, exactly what MAXPS / MINPS compute; the compiler does not
// turn the selects into those instructions by itself (they differ from IEEE max/min on -0 and NaN).
template <typename V>
inline V max_lanes(V a, V b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) {
    const __m512 x = __builtin_bit_cast(__m512, a);  // the masked form: GCC 12 warns on the unmasked one
    return __builtin_bit_cast(V, _mm512_mask_max_ps(x, 0xFFFF, x, __builtin_bit_cast(__m512, b)));
  }
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32) return __builtin_bit_cast(V, _mm256_max_ps(__builtin_bit_cast(__m256, a), __builtin_bit_cast(__m256, b)));
#endif
  return a > b ? a : b;
}
template <typename V>
inline V min_lanes(V a, V b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) {
    const __m512 x = __builtin_bit_cast(__m512, a);
    return __builtin_bit_cast(V, _mm512_mask_min_ps(x, 0xFFFF, x, __builtin_bit_cast(__m512, b)));
  }
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32) return __builtin_bit_cast(V, _mm256_min_ps(__builtin_bit_cast(__m256, a), __builtin_bit_cast(__m256, b)));
#endif
  return a < b ? a : b;
}

// Every lane's value of largest magnitude among its N values (sign kept, the first on ties, as
// ggml's loops find it), and that magnitude in *amax.
template <int N>
inline VF largest_magnitude_lanes(const VF* x, VF* amax) {
  VF max = VF{};
  *amax = VF{};
  for (int i = 0; i < N; ++i) {
    const VF a = abs_lanes(x[i]);
    const VI bigger = a > *amax;
    *amax = bigger ? a : *amax;
    max = bigger ? x[i] : max;
  }
  return max;
}

// nearest_int(f) clamped to [0, nmax], as a float: f + 1.5 * 2^23 rounds f to an integer (ties to
// even, as nearest_int's bit trick does) and subtracting it back is exact, so the clamp can stay
// in floats and the codes need no conversion to be summed. Valid for |f| < 2^22, which every
// lane that is not thrown away satisfies (nearest_int asserts the same). The clamp is a MAXPS /
// MINPS pair: for NaN it gives a bound where the reference's integer clamp has no NaN to see, and
// NaN only arises in thrown-away lanes.
template <typename V = VF>
inline V round_clamp_lanes(V f, float lo, float hi) {
  const V r = (f + 12582912.f) - 12582912.f;
  return min_lanes(max_lanes(r, V{} + lo), V{} + hi);
}

// make_qkx2_quants(N, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, kMad), one
// sub-block of N weights per lane. Instead of copying the codes of every better candidate, a lane
// remembers the scale and minimum its best codes were rounded with and rounds them once at the
// end: the same float operations on the same inputs, so the same codes.
template <int N = 32, bool kMad = false>
inline void make_qkx2_quants_lanes(const VF* x, const VF* weights, int nmax, float rmin, float rdelta, int nstep,
                                   VI* L, VF* scale_out, VF* the_min_out) {
  VF min = x[0], max = x[0];
  VF sum_w = weights[0];
  VF sum_x = sum_w * x[0];
  for (int i = 1; i < N; ++i) {
    min = x[i] < min ? x[i] : min;
    max = x[i] > max ? x[i] : max;
    const VF w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  min = min > 0 ? VF{} : min;
  const VF min0 = min;
  const VI flat = max == min;  // the reference returns early: L = 0, scale 0, the_min -min
  const float fmax = static_cast<float>(nmax);
  VF iscale = fmax / (max - min);
  VF scale = 1 / iscale;
  VF best_error = VF{};
  for (int i = 0; i < N; ++i) {
    VF diff = scale * round_clamp_lanes(iscale * (x[i] - min), 0, fmax) + min - x[i];
    diff = kMad ? abs_lanes(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  VF best_iscale = iscale, best_rounding_min = min;  // what the best codes were rounded with
  VF Laux[N];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + fmax) / (max - min);
    VF sum_l = VF{}, sum_l2 = VF{}, sum_xl = VF{};
    for (int i = 0; i < N; ++i) {
      const VF lf = round_clamp_lanes(iscale * (x[i] - min), 0, fmax);
      Laux[i] = lf;
      const VF w = weights[i];
      sum_l += w * lf;
      sum_l2 += w * lf * lf;
      sum_xl += w * lf * x[i];
    }
    const VF D = sum_w * sum_l2 - sum_l * sum_l;
    VF this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    VF this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    const VI positive_min = this_min > 0;
    this_min = positive_min ? VF{} : this_min;
    this_scale = positive_min ? sum_xl / sum_l2 : this_scale;
    VF cur_error = VF{};
    for (int i = 0; i < N; ++i) {
      VF diff = this_scale * Laux[i] + this_min - x[i];
      diff = kMad ? abs_lanes(diff) : diff * diff;
      cur_error += weights[i] * diff;
    }
    const VI better = (D > 0) & (cur_error < best_error);
    best_iscale = better ? iscale : best_iscale;
    best_rounding_min = better ? min : best_rounding_min;
    best_error = better ? cur_error : best_error;
    scale = better ? this_scale : scale;
    min = better ? this_min : min;
  }
  for (int i = 0; i < N; ++i) {
    const VI l = __builtin_convertvector(round_clamp_lanes(best_iscale * (x[i] - best_rounding_min), 0, fmax), VI);
    L[i] = flat ? VI{} : l;
  }
  *scale_out = flat ? VF{} : scale;
  *the_min_out = -(flat ? min0 : min);
}

inline float lane(VF v, int k) { return v[k]; }

inline void store_half_bytes(uint8_t* p, float v) {
  const uint16_t h = baseline::float_to_half(v);
  std::memcpy(p, &h, 2);
}

inline float load_half_bytes(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return baseline::half_to_float(h);
}

// Runs encode_call(x, out, valid) over n floats in calls of kUnitsPerCall units (a super-block or a
// 32-block per lane group) of kUnitElements elements, kUnitBytes encoded each. A short last call
// gets copies of its last unit as padding and keeps only its `valid` units.
template <int kUnitElements, int kUnitBytes, int kUnitsPerCall, typename EncodeCall>
void encode_in_calls(const float* x, int64_t n, uint8_t* out, EncodeCall encode_call) {
  const int64_t units = n / kUnitElements;
  int64_t u = 0;
  for (; u + kUnitsPerCall <= units; u += kUnitsPerCall) {
    encode_call(x + kUnitElements * u, out + kUnitBytes * u, kUnitsPerCall);
  }
  if (u < units) {
    alignas(64) float padded[kUnitElements * kUnitsPerCall];
    alignas(64) uint8_t encoded[kUnitBytes * kUnitsPerCall];
    const int valid = static_cast<int>(units - u);
    for (int k = 0; k < kUnitsPerCall; ++k) {
      std::memcpy(padded + kUnitElements * k, x + kUnitElements * (u + std::min(k, valid - 1)), kUnitElements * sizeof(float));
    }
    encode_call(padded, encoded, valid);
    std::memcpy(out + kUnitBytes * u, encoded, static_cast<size_t>(kUnitBytes) * valid);
  }
}

// The N consecutive values of every lane's sub-block (or block): lane k holds x[N k .. N k + N),
// X[l] their l-th values. With N = 32 and 256-blocks, lane k holds sub-block k % 8 of super-block
// k / 8; the 16-value sub-blocks of a super-block take 16 / kLanes calls.
template <int N = 32>
inline void load_subblock_lanes(const float* x, VF* X) {
  for (int l = 0; l < N; ++l) {
    for (int k = 0; k < kLanes; ++k) X[l][k] = x[N * k + l];
  }
}

// The codes of super-block sb of the call (lanes 8 sb .. 8 sb + 7) into its block.
template <int kMaxCode, int kBlockBytes>
void pack_kquant_codes(const VI* L, int sb, uint8_t* block) {
  auto code = [&](int i) { return static_cast<uint8_t>(L[i % 32][8 * sb + i / 32]); };  // element i of the super-block
  if constexpr (kMaxCode == 15) {
    uint8_t* q = block + 16;
    for (int j = 0; j < 256; j += 64) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(code(j + l) | (code(j + l + 32) << 4));
      q += 32;
    }
  } else {
    // Element l of sub-blocks 2p and 2p + 1 share ql[32p + l]; their fifth bits are bits 2p and
    // 2p + 1 of qh[l]. Branch-free: the fifth bit is a coin flip the predictor cannot learn.
    uint8_t* qh = block + 16;
    uint8_t* ql = block + 48;
    for (int l = 0; l < 32; ++l) {
      unsigned high = 0;
      for (int p = 0; p < 4; ++p) {
        const unsigned a = code(64 * p + l), b = code(64 * p + l + 32);
        ql[32 * p + l] = static_cast<uint8_t>((a & 15) | ((b & 15) << 4));
        high |= ((a >> 4) << (2 * p)) | ((b >> 4) << (2 * p + 1));
      }
      qh[l] = static_cast<uint8_t>(high);
    }
  }
}

// What encode_kquant_lanes decided, for a caller that compares it with other candidates: the
// codes and each lane's decoded scale and min (the decoder's d * sc and dmin * m).
struct KquantLanes {
  VI L[32];
  VF d1, m1;
};

// ggml's quantize_row_q4_K_ref / q5_K_ref for kSuperBlocksPerCall super-blocks: x holds that
// many (the caller pads a short last call by repeating a super-block), out receives as many
// blocks of kBlockBytes; kMaxCode 15 (Q4_K) or 31 (Q5_K).
template <int kMaxCode, int kBlockBytes>
void encode_kquant_lanes(const float* x, uint8_t* out, int valid_superblocks, KquantLanes* result = nullptr) {
  const float rmin = kMaxCode == 15 ? -1.f : -0.5f;
  const int nstep = kMaxCode == 15 ? 20 : 15;
  VF X[32], W[32];
  load_subblock_lanes(x, X);
  VF sum_x2 = VF{};
  for (int l = 0; l < 32; ++l) sum_x2 += X[l] * X[l];
  VF av_x;
  for (int k = 0; k < kLanes; ++k) av_x[k] = std::sqrt(sum_x2[k] / 32);
  for (int l = 0; l < 32; ++l) W[l] = av_x + abs_lanes(X[l]);
  KquantLanes local;
  KquantLanes& r = result != nullptr ? *result : local;
  VI* L = r.L;
  VF scales, mins;
  make_qkx2_quants_lanes(X, W, kMaxCode, rmin, 0.1f, nstep, L, &scales, &mins);

  // Per super-block: the 6-bit scales and mins against d and dmin (scalar, as the reference).
  VF d_lane, dm_lane;
  for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
    uint8_t* block = out + sb * kBlockBytes;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      const float scale = lane(scales, 8 * sb + j), min = lane(mins, 8 * sb + j);
      if (scale > max_scale) max_scale = scale;
      if (min > max_min) max_min = min;
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls_all[8], lm_all[8];
    for (int j = 0; j < 8; ++j) {
      VF pair = VF{};
      pair[0] = inv_scale * lane(scales, 8 * sb + j);
      pair[1] = inv_min * lane(mins, 8 * sb + j);
      const VI rounded = nearest_int_lanes(pair);
      ls_all[j] = std::min<uint8_t>(63, static_cast<uint8_t>(rounded[0]));
      lm_all[j] = std::min<uint8_t>(63, static_cast<uint8_t>(rounded[1]));
    }
    reference_parts::pack_scales_mins(ls_all, lm_all, block + 4);
    store_half_bytes(block, max_scale / 63.f);
    store_half_bytes(block + 2, max_min / 63.f);
    const float d = load_half_bytes(block), dmin = load_half_bytes(block + 2);
    for (int j = 0; j < 8; ++j) {  // get_scale_min_k4 of what was stored is ls_all / lm_all
      d_lane[8 * sb + j] = d * static_cast<float>(ls_all[j]);
      dm_lane[8 * sb + j] = dmin * static_cast<float>(lm_all[j]);
    }
  }
  // Codes re-rounded against the stored scales and mins (lanes whose scale is 0 keep theirs).
  const VI keep = d_lane == 0;
  for (int l = 0; l < 32; ++l) {
    const VI rounded = clamp_lanes(nearest_int_lanes((X[l] + dm_lane) / d_lane), 0, kMaxCode);
    L[l] = keep ? L[l] : rounded;
  }
  for (int sb = 0; sb < valid_superblocks; ++sb) pack_kquant_codes<kMaxCode, kBlockBytes>(L, sb, out + sb * kBlockBytes);
  r.d1 = d_lane;
  r.m1 = dm_lane;
}

template <int kMaxCode, int kBlockBytes>
void encode_kquant(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<256, kBlockBytes, kSuperBlocksPerCall>(x, n, out, [](const float* xs, uint8_t* o, int valid) {
    encode_kquant_lanes<kMaxCode, kBlockBytes>(xs, o, valid);
  });
}

// ------------------------------------------------------------------------------------------------
// Q6_K: make_qx_quants(16, 32, x, L, rmse_type 1) with one 16-weight sub-block per lane.

// make_qx_quants(16, nmax, x, L, rmse_type 1, weights) for one sub-block per lane (Q6_K's
// reference quantizer weights by x^2).
template <int nmax>
inline VF make_qx_quants_lanes(const VF* x, const VF* weights, VI* L) {
  constexpr float kGroupMaxEps = 1e-15f;
  VF amax;
  const VF max = largest_magnitude_lanes<16>(x, &amax);
  const VI zero = amax < kGroupMaxEps;  // the reference returns L = 0, scale 0
  // As in make_qkx2_quants_lanes, a lane keeps the iscale its best codes were rounded with and
  // rounds them once at the end.
  VF iscale = static_cast<float>(-nmax) / max;
  VF sumlx = VF{}, suml2 = VF{};
  for (int i = 0; i < 16; ++i) {
    const VF lf = round_clamp_lanes(iscale * x[i], -nmax, nmax - 1);
    const VF w = weights[i];
    sumlx += w * x[i] * lf;
    suml2 += w * lf * lf;
  }
  VF best_iscale = iscale;
  VF scale = suml2 != 0 ? sumlx / suml2 : VF{};
  VF best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = VF{};
    for (int i = 0; i < 16; ++i) {
      const VF lf = round_clamp_lanes(iscale * x[i], -nmax, nmax - 1);
      const VF w = weights[i];
      sumlx += w * x[i] * lf;
      suml2 += w * lf * lf;
    }
    const VI better = (suml2 > 0) & (sumlx * sumlx > best * suml2);
    best_iscale = better ? iscale : best_iscale;
    const VF new_scale = sumlx / suml2;
    scale = better ? new_scale : scale;
    best = better ? new_scale * sumlx : best;
  }
  for (int i = 0; i < 16; ++i) {
    const VI l = __builtin_convertvector(round_clamp_lanes(best_iscale * x[i], -nmax, nmax - 1), VI) + nmax;
    L[i] = zero ? VI{} : l;
  }
  return zero ? VF{} : scale;
}

// The 256 six-bit codes (0..63) of a Q6_K block into its ql (128 bytes: low nibbles) and qh (64
// bytes: high bit pairs), ggml's layout.
inline void pack_q6_K_codes(const uint8_t* codes, uint8_t* ql, uint8_t* qh) {
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = codes + j + l;
      ql[l + 0] = static_cast<uint8_t>((c[0] & 0xF) | ((c[64] & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((c[32] & 0xF) | ((c[96] & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((c[0] >> 4) | ((c[32] >> 4) << 2) | ((c[64] >> 4) << 4) | ((c[96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

// ggml's quantize_row_q6_K_ref, one super-block per call (16 sub-blocks in 16 / kLanes passes).
inline void encode_q6_K_superblock(const float* x, uint8_t* out) {
  constexpr float kGroupMaxEps = 1e-15f;
  constexpr int kPasses = 16 / kLanes;
  VF X[kPasses][16];
  VI L[kPasses][16];
  float scales[16];
  for (int p = 0; p < kPasses; ++p) {
    VF W[16];
    load_subblock_lanes<16>(x + 16 * kLanes * p, X[p]);
    for (int i = 0; i < 16; ++i) W[i] = X[p][i] * X[p][i];
    const VF s = make_qx_quants_lanes<32>(X[p], W, L[p]);
    for (int k = 0; k < kLanes; ++k) scales[kLanes * p + k] = s[k];
  }
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  int8_t* y_scales = reinterpret_cast<int8_t*>(out + 192);
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(out, 0, 210);
    store_half_bytes(out + 208, 0.f);
    return;
  }
  const float iscale = -128.f / max_scale;
  store_half_bytes(out + 208, 1 / iscale);
  const float d_all = load_half_bytes(out + 208);
  for (int ib = 0; ib < 16; ++ib) {
    VF v = VF{};
    v[0] = iscale * scales[ib];
    y_scales[ib] = static_cast<int8_t>(std::min(127, static_cast<int>(nearest_int_lanes(v)[0])));
  }
  uint8_t codes[256];
  for (int p = 0; p < kPasses; ++p) {
    VF d;
    for (int k = 0; k < kLanes; ++k) d[k] = d_all * static_cast<float>(y_scales[kLanes * p + k]);
    const VI keep = d == 0;  // the reference skips such sub-blocks: their codes stay
    for (int i = 0; i < 16; ++i) {
      const VI l = clamp_lanes(nearest_int_lanes(X[p][i] / d), -32, 31) + 32;
      const VI code = keep ? L[p][i] : l;
      for (int k = 0; k < kLanes; ++k) codes[16 * (kLanes * p + k) + i] = static_cast<uint8_t>(code[k]);
    }
  }
  pack_q6_K_codes(codes, ql, qh);
}

inline void encode_q6_K_all(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 256; ++b) encode_q6_K_superblock(x + 256 * b, out + 210 * b);
}

// ------------------------------------------------------------------------------------------------
// Q2_K: make_qkx2_quants(16, 3, x, |x|, ..., -0.5, 0.1, 15, use_mad) with one 16-weight
// sub-block per lane; 4-bit scales and mins against fp16 d and dmin.

constexpr int kQ2Passes = 16 / kLanes;

// The last steps of both Q2_K quantizers once scales, mins, d and dmin are stored in `out`: codes
// re-rounded against what was stored (sub-blocks whose scale is 0 keep theirs), then packed.
// The 256 two-bit codes of a Q2_K block into its 64 code bytes (ggml's layout).
inline void pack_q2_K_codes(const uint8_t* codes, uint8_t* y_qs) {
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = codes + j + l;
      y_qs[j / 4 + l] = static_cast<uint8_t>(c[0] | (c[32] << 2) | (c[64] << 4) | (c[96] << 6));
    }
  }
}

inline void finish_q2_K_superblock(const VF (*X)[16], const VI (*L)[16], uint8_t* out) {
  const uint8_t* y_scales = out;
  uint8_t* y_qs = out + 16;
  const float d_all = load_half_bytes(out + 80), dmin_all = load_half_bytes(out + 82);
  uint8_t codes[256];
  for (int p = 0; p < kQ2Passes; ++p) {
    VF d, dm;
    for (int k = 0; k < kLanes; ++k) {
      const uint8_t sc = y_scales[kLanes * p + k];
      d[k] = d_all * static_cast<float>(sc & 0xF);
      dm[k] = dmin_all * static_cast<float>(sc >> 4);
    }
    const VI keep = d == 0;
    for (int i = 0; i < 16; ++i) {
      const VI l = clamp_lanes(nearest_int_lanes((X[p][i] + dm) / d), 0, 3);
      const VI code = keep ? L[p][i] : l;
      for (int k = 0; k < kLanes; ++k) codes[16 * (kLanes * p + k) + i] = static_cast<uint8_t>(code[k]);
    }
  }
  pack_q2_K_codes(codes, y_qs);
}

inline void encode_q2_K_superblock(const float* x, uint8_t* out) {
  constexpr int kPasses = kQ2Passes;
  VF X[kPasses][16];
  VI L[kPasses][16];
  float scales[16], mins[16];
  for (int p = 0; p < kPasses; ++p) {
    VF W[16];
    load_subblock_lanes<16>(x + 16 * kLanes * p, X[p]);
    for (int i = 0; i < 16; ++i) W[i] = abs_lanes(X[p][i]);
    VF s, m;
    make_qkx2_quants_lanes<16, true>(X[p], W, 3, -0.5f, 0.1f, 15, L[p], &s, &m);
    for (int k = 0; k < kLanes; ++k) {
      scales[kLanes * p + k] = s[k];
      mins[kLanes * p + k] = m[k];
    }
  }
  constexpr float q4scale = 15.f;
  uint8_t* y_scales = out;
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  auto nearest = [](float f) {
    VF v = VF{};
    v[0] = f;
    return nearest_int_lanes(v)[0];
  };
  if (max_scale > 0) {
    const float iscale = q4scale / max_scale;
    for (int j = 0; j < 16; ++j) y_scales[j] = static_cast<uint8_t>(nearest(iscale * scales[j]));
    store_half_bytes(out + 80, max_scale / q4scale);
  } else {
    for (int j = 0; j < 16; ++j) y_scales[j] = 0;
    store_half_bytes(out + 80, 0.f);
  }
  if (max_min > 0) {
    const float iscale = q4scale / max_min;
    for (int j = 0; j < 16; ++j) y_scales[j] |= static_cast<uint8_t>(nearest(iscale * mins[j]) << 4);
    store_half_bytes(out + 82, max_min / q4scale);
  } else {
    store_half_bytes(out + 82, 0.f);
  }
  finish_q2_K_superblock(X, L, out);
}

inline void encode_q2_K_all(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 256; ++b) encode_q2_K_superblock(x + 256 * b, out + 84 * b);
}

// ------------------------------------------------------------------------------------------------
// Q3_K: make_q3_quants(16, 4, x, L, do_rmse) with one 16-weight sub-block per lane; 6-bit signed
// scales against one fp16 d. The reference's refinement passes stop when a pass changes nothing;
// a lane that has stopped is unchanged by further passes (same state, same decisions), so all
// lanes run until none changes.

inline VF make_q3_quants_lanes(const VF* x, VI* L) {
  constexpr int nmax = 4;
  constexpr float kGroupMaxEps = 1e-15f;
  VF amax;
  const VF max = largest_magnitude_lanes<16>(x, &amax);
  const VI zero = amax < kGroupMaxEps;
  const VF iscale = static_cast<float>(-nmax) / max;
  VF sumlx = VF{}, suml2 = VF{};
  for (int i = 0; i < 16; ++i) {
    L[i] = clamp_lanes(nearest_int_lanes(iscale * x[i]), -nmax, nmax - 1);
    const VF w = x[i] * x[i], lf = to_float(L[i]);
    sumlx += w * x[i] * lf;
    suml2 += w * lf * lf;
  }
  for (int itry = 0; itry < 5; ++itry) {
    VI changed = VI{};
    for (int i = 0; i < 16; ++i) {
      const VF w = x[i] * x[i];
      const VF li = to_float(L[i]);
      VF slx = sumlx - w * x[i] * li;
      VF sl2 = suml2 - w * li * li;
      const VI positive = slx > 0;
      const VI new_l = clamp_lanes(nearest_int_lanes(x[i] * sl2 / slx), -nmax, nmax - 1);
      const VF nf = to_float(new_l);
      slx += w * x[i] * nf;
      sl2 += w * nf * nf;
      const VI take = positive & (new_l != L[i]) & (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2);
      L[i] = take ? new_l : L[i];
      sumlx = take ? slx : sumlx;
      suml2 = take ? sl2 : suml2;
      changed |= take;
    }
    bool any = false;
    for (int k = 0; k < kLanes; ++k) any |= changed[k] != 0;
    if (!any) break;
  }
  for (int i = 0; i < 16; ++i) L[i] = zero ? VI{} : L[i] + nmax;
  return zero ? VF{} : (suml2 > 0 ? sumlx / suml2 : VF{});
}

constexpr int kQ3Passes = 16 / kLanes;

// Scale j of a Q3_K block (6 bits, offset by 32) into its 12 packed bytes, zeroed beforehand.
inline void pack_q3_scale(uint8_t* y_scales, int j, int l) {
  if (j < 8) {
    y_scales[j] = static_cast<uint8_t>(l & 0xF);
  } else {
    y_scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
  }
  y_scales[j % 4 + 8] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
}

// The 256 three-bit codes (0..7) of a Q3_K block into hmask (32 bytes) and qs (64 bytes): bit k of
// hmask[m] is the third bit of code 32k + m; qs keeps the low two bits. Branch-free, as in Q5_K.
inline void pack_q3_K_codes(const uint8_t* codes, uint8_t* hmask, uint8_t* qs) {
  for (int m = 0; m < 32; ++m) {
    unsigned high = 0;
    for (int k = 0; k < 8; ++k) high |= static_cast<unsigned>(codes[32 * k + m] >> 2) << k;
    hmask[m] = static_cast<uint8_t>(high);
  }
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = codes + j + l;
      qs[j / 4 + l] = static_cast<uint8_t>((c[0] & 3) | ((c[32] & 3) << 2) | ((c[64] & 3) << 4) | ((c[96] & 3) << 6));
    }
  }
}

// The last steps of both Q3_K quantizers once the scales and d are stored in `out` (q3_K_codes of
// the reference): codes re-rounded against what was stored (sub-blocks whose scale is 0 keep
// theirs), then packed.
inline void finish_q3_K_superblock(const VF (*X)[16], const VI (*L)[16], uint8_t* out) {
  uint8_t* hmask = out;
  uint8_t* qs = out + 32;
  const uint8_t* y_scales = out + 96;
  const float d_all = load_half_bytes(out + 108);
  uint8_t codes[256];
  for (int p = 0; p < kQ3Passes; ++p) {
    VF d;
    for (int k = 0; k < kLanes; ++k) {
      const int j = kLanes * p + k;
      int8_t sc = static_cast<int8_t>(j < 8 ? y_scales[j] & 0xF : y_scales[j - 8] >> 4);
      sc = static_cast<int8_t>((sc | (((y_scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
      d[k] = d_all * static_cast<float>(sc);
    }
    const VI keep = d == 0;
    for (int i = 0; i < 16; ++i) {
      const VI l = clamp_lanes(nearest_int_lanes(X[p][i] / d), -4, 3) + 4;
      const VI code = keep ? L[p][i] : l;
      for (int k = 0; k < kLanes; ++k) codes[16 * (kLanes * p + k) + i] = static_cast<uint8_t>(code[k]);
    }
  }
  pack_q3_K_codes(codes, hmask, qs);
}

inline void encode_q3_K_superblock(const float* x, uint8_t* out) {
  VF X[kQ3Passes][16];
  VI L[kQ3Passes][16];
  float scales[16];
  for (int p = 0; p < kQ3Passes; ++p) {
    load_subblock_lanes<16>(x + 16 * kLanes * p, X[p]);
    const VF s = make_q3_quants_lanes(X[p], L[p]);
    for (int k = 0; k < kLanes; ++k) scales[kLanes * p + k] = s[k];
  }
  uint8_t* y_scales = out + 96;
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    const float scale = std::fabs(scales[j]);
    if (scale > amax) {
      amax = scale;
      max_scale = scales[j];
    }
  }
  std::memset(y_scales, 0, 12);
  if (max_scale) {
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      VF v = VF{};
      v[0] = iscale * scales[j];
      const int l = static_cast<int8_t>(nearest_int_lanes(v)[0]);
      pack_q3_scale(y_scales, j, std::max<int>(-32, std::min<int>(31, l)) + 32);
    }
    store_half_bytes(out + 108, 1 / iscale);
  } else {
    store_half_bytes(out + 108, 0.f);
  }
  finish_q3_K_superblock(X, L, out);
}

inline void encode_q3_K_all(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 256; ++b) encode_q3_K_superblock(x + 256 * b, out + 110 * b);
}

// ------------------------------------------------------------------------------------------------
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (quantize_row_*_ref): one 32-weight block per lane.

enum class Legacy { kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0 };

// roundf (half away from zero) of values well inside the int range, exactly.
inline VI round_half_away_lanes(VF v) {
  const VI t = __builtin_convertvector(v, VI);  // truncation toward zero
  const VF frac = v - to_float(t);               // exact for |v| < 2^23
  const VI up = frac >= 0.5f, down = frac <= -0.5f;
  return t + (up & 1) - (down & 1);
}

template <Legacy kType>
void encode_legacy_lanes(const float* x, uint8_t* out, int valid_blocks) {
  constexpr int kBytes = kType == Legacy::kQ4_0 ? 18 : kType == Legacy::kQ4_1 ? 20 : kType == Legacy::kQ5_0 ? 22
                         : kType == Legacy::kQ5_1 ? 24 : 34;
  VF X[32];
  load_subblock_lanes(x, X);
  VF d, m = VF{};
  VI q[32];
  if constexpr (kType == Legacy::kQ4_1 || kType == Legacy::kQ5_1) {
    VF min = VF{} + 3.402823466e+38F, max = VF{} - 3.402823466e+38F;
    for (int j = 0; j < 32; ++j) {
      min = X[j] < min ? X[j] : min;
      max = X[j] > max ? X[j] : max;
    }
    constexpr int kLevels = kType == Legacy::kQ4_1 ? 15 : 31;
    d = (max - min) / static_cast<float>(kLevels);
    const VF id = d != 0 ? 1.0f / d : VF{};
    m = min;
    for (int j = 0; j < 32; ++j) {
      const VI v = __builtin_convertvector((X[j] - min) * id + 0.5f, VI);  // (int8_t) / (uint8_t) casts truncate
      q[j] = kType == Legacy::kQ4_1 ? (v > 15 ? VI{} + 15 : v) : v;
    }
  } else if constexpr (kType == Legacy::kQ8_0) {
    VF amax = VF{};
    for (int j = 0; j < 32; ++j) {
      const VF a = abs_lanes(X[j]);
      amax = amax > a ? amax : a;  // MAX(amax, fabsf(v))
    }
    d = amax / 127.0f;
    const VF id = d != 0 ? 1.0f / d : VF{};
    for (int j = 0; j < 32; ++j) q[j] = round_half_away_lanes(X[j] * id);
  } else {
    VF amax;
    const VF max = largest_magnitude_lanes<32>(X, &amax);
    constexpr float kDiv = kType == Legacy::kQ4_0 ? -8.0f : -16.0f;
    constexpr float kOffset = kType == Legacy::kQ4_0 ? 8.5f : 16.5f;
    constexpr int kTop = kType == Legacy::kQ4_0 ? 15 : 31;
    d = max / kDiv;
    const VF id = d != 0 ? 1.0f / d : VF{};
    for (int j = 0; j < 32; ++j) {
      const VI v = __builtin_convertvector(X[j] * id + kOffset, VI);
      q[j] = v > kTop ? VI{} + kTop : v;
    }
  }
  for (int k = 0; k < valid_blocks; ++k) {
    uint8_t* block = out + kBytes * k;
    store_half_bytes(block, d[k]);
    if constexpr (kType == Legacy::kQ8_0) {
      for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q[j][k]));
    } else {
      uint8_t* qs = block + kBytes - 16;
      if constexpr (kType == Legacy::kQ4_1 || kType == Legacy::kQ5_1) store_half_bytes(block + 2, m[k]);
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        const uint32_t x0 = static_cast<uint32_t>(q[j][k]), x1 = static_cast<uint32_t>(q[j + 16][k]);
        qs[j] = static_cast<uint8_t>((x0 & 0x0F) | ((x1 & 0x0F) << 4));
        qh |= ((x0 & 0x10u) >> 4) << j;
        qh |= ((x1 & 0x10u) >> 4) << (j + 16);
      }
      if constexpr (kType == Legacy::kQ5_0) std::memcpy(block + 2, &qh, 4);
      if constexpr (kType == Legacy::kQ5_1) std::memcpy(block + 4, &qh, 4);
    }
  }
}

template <Legacy kType, int kBytes>
void encode_legacy(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<32, kBytes, kLanes>(x, n, out, encode_legacy_lanes<kType>);
}

// ------------------------------------------------------------------------------------------------
// Q2_K and Q3_K decoders, 16 values at a time (dequantize_row_q2_K / q3_K's operations per value).


inline V16I load16(const uint8_t* p) {
  V16B b;
  std::memcpy(&b, p, 16);
  return __builtin_convertvector(b, V16I);
}

inline void decode_q2_K_all(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / 256; ++b, in += 84, y += 256) {
    const float d = load_half_bytes(in + 80), min = load_half_bytes(in + 82);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = in + 16 + 32 * half;
      const V16I lo = load16(q), hi = load16(q + 16);
      for (int j = 0; j < 4; ++j) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = in[8 * half + 2 * j + part];
          const float dl = d * static_cast<float>(sc & 0xF), ml = min * static_cast<float>(sc >> 4);
          const V16F v = __builtin_convertvector(((part ? hi : lo) >> (2 * j)) & 3, V16F);
          const V16F out = dl * v - ml;
          std::memcpy(y + 128 * half + 32 * j + 16 * part, &out, 64);
        }
      }
    }
  }
}

inline void decode_q3_K_all(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  for (int64_t b = 0; b < n / 256; ++b, in += 110, y += 256) {
    const float d_all = load_half_bytes(in + 108);
    uint32_t aux[4];
    std::memcpy(aux, in + 96, 12);
    const uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    int8_t scales[16];
    std::memcpy(scales, aux, 16);
    const V16I hm_lo = load16(in), hm_hi = load16(in + 16);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = in + 32 + 32 * half;
      const V16I lo = load16(q), hi = load16(q + 16);
      for (int j = 0; j < 4; ++j) {
        const int bit = 4 * half + j;
        for (int part = 0; part < 2; ++part) {
          const float dl = d_all * static_cast<float>(scales[8 * half + 2 * j + part] - 32);
          const V16I codes = ((part ? hi : lo) >> (2 * j)) & 3;
          const V16I high = ((part ? hm_hi : hm_lo) >> bit) & 1;
          const V16F out = dl * __builtin_convertvector(codes - (high ^ 1) * 4, V16F);
          std::memcpy(y + 128 * half + 32 * j + 16 * part, &out, 64);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// IQ4_NL and IQ4_XS (quantize_row_iq4_nl_impl, ntry 7, weights x^2): one 32-weight block per lane.

constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// best_index_int8(16, values, x) per lane. The reference's binary search ends at the mu with
// values[mu - 1] <= x < values[mu], i.e. mu = how many values are <= x.
inline VI best_index_lanes(VF x) {
  VI mu = VI{};
  VF lo = VF{} + static_cast<float>(kIq4Values[0]), hi = VF{} + static_cast<float>(kIq4Values[15]);
  for (int i = 0; i < 16; ++i) {
    const float v = kIq4Values[i];
    const VI below = v <= x;
    mu -= below;  // a true comparison is -1
    lo = below ? VF{} + v : lo;
  }
  for (int i = 15; i >= 0; --i) {
    const float v = kIq4Values[i];
    hi = v > x ? VF{} + v : hi;
  }
  VI index = (x - lo < hi - x) ? mu - 1 : mu;
  index = x <= static_cast<float>(kIq4Values[0]) ? VI{} : index;
  return x >= static_cast<float>(kIq4Values[15]) ? VI{} + 15 : index;
}

inline VF value_of(VI index) {
  VF q = VF{};
  for (int i = 0; i < 16; ++i) q = index == i ? VF{} + static_cast<float>(kIq4Values[i]) : q;
  return q;
}

// The per-block scale of the first stage (scales[ib] of the reference).
inline VF iq4_block_scales(const VF* x) {
  constexpr int ntry = 7;
  constexpr float kGroupMaxEps = 1e-15f;
  VF weight[32];
  for (int j = 0; j < 32; ++j) weight[j] = x[j] * x[j];
  VF amax;
  const VF max = largest_magnitude_lanes<32>(x, &amax);
  const VI zero = amax < kGroupMaxEps;
  VF d = -max / static_cast<float>(kIq4Values[0]);
  VF id = 1 / d;
  VF sumqx = VF{}, sumq2 = VF{};
  for (int j = 0; j < 32; ++j) {
    const VF q = value_of(best_index_lanes(id * x[j]));
    sumqx += weight[j] * q * x[j];
    sumq2 += weight[j] * q * q;
  }
  d = sumq2 > 0 ? sumqx / sumq2 : VF{};
  VF best = d * sumqx;
  for (int itry = -ntry; itry <= ntry; ++itry) {
    id = static_cast<float>(itry + kIq4Values[0]) / max;
    sumqx = sumq2 = VF{};
    for (int j = 0; j < 32; ++j) {
      const VF q = value_of(best_index_lanes(id * x[j]));
      sumqx += weight[j] * q * x[j];
      sumq2 += weight[j] * q * q;
    }
    const VI better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2);
    const VF nd = sumqx / sumq2;
    d = better ? nd : d;
    best = better ? nd * sumqx : best;
  }
  return zero ? VF{} : d;
}

inline void pack_iq4(const VI* L, int k, uint8_t* q4) {  // one 32-block of lane k: 16 bytes
  for (int j = 0; j < 16; ++j) q4[j] = static_cast<uint8_t>(L[j][k] | (L[16 + j][k] << 4));
}

inline void encode_iq4_nl_lanes(const float* x, uint8_t* out, int valid) {
  VF X[32];
  load_subblock_lanes(x, X);
  const VF scales = iq4_block_scales(X);
  VF id;
  for (int k = 0; k < kLanes; ++k) id[k] = scales[k] ? 1 / scales[k] : 0;
  VI L[32];
  for (int j = 0; j < 32; ++j) L[j] = best_index_lanes(id * X[j]);
  for (int k = 0; k < valid; ++k) {
    store_half_bytes(out + 18 * k, scales[k]);
    pack_iq4(L, k, out + 18 * k + 2);
  }
}

inline void encode_iq4_nl_all(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<32, 18, kLanes>(x, n, out, encode_iq4_nl_lanes);
}

inline void encode_iq4_xs_lanes(const float* x, uint8_t* out, int valid_superblocks) {
  VF X[32];
  load_subblock_lanes(x, X);
  const VF scales = iq4_block_scales(X);
  VF idl;
  for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
    uint8_t* block = out + 136 * sb;
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float abs_d = std::fabs(scales[8 * sb + ib]);
      if (abs_d > amax_scale) {
        amax_scale = abs_d;
        max_scale = scales[8 * sb + ib];
      }
    }
    const float d = -max_scale / 32;
    store_half_bytes(block, d);
    const float id = d ? 1 / d : 0.f;
    uint16_t sh = 0;
    uint8_t* scales_l = block + 4;
    for (int ib = 0; ib < 8; ++ib) {
      VF v = VF{};
      v[0] = id * scales[8 * sb + ib];
      int l = std::max(-32, std::min(31, static_cast<int>(nearest_int_lanes(v)[0])));
      const float dl = d * static_cast<float>(l);
      idl[8 * sb + ib] = dl ? 1 / dl : 0.f;
      l += 32;
      const uint8_t l_l = static_cast<uint8_t>(l & 0xf), l_h = static_cast<uint8_t>(l >> 4);
      if (ib % 2 == 0) {
        scales_l[ib / 2] = l_l;
      } else {
        scales_l[ib / 2] |= static_cast<uint8_t>(l_l << 4);
      }
      sh = static_cast<uint16_t>(sh | (l_h << 2 * ib));
    }
    std::memcpy(block + 2, &sh, 2);
  }
  VI L[32];
  for (int j = 0; j < 32; ++j) L[j] = best_index_lanes(idl * X[j]);
  for (int sb = 0; sb < valid_superblocks; ++sb) {
    for (int ib = 0; ib < 8; ++ib) pack_iq4(L, 8 * sb + ib, out + 136 * sb + 8 + 16 * ib);
  }
}

inline void encode_iq4_xs_all(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<256, 136, kSuperBlocksPerCall>(x, n, out, encode_iq4_xs_lanes);
}

// IQ4_NL / IQ4_XS decoders: the 16-entry grid as a vector, indexed by a shuffle.
inline V16F iq4_grid() {
  V16F t;
  for (int i = 0; i < 16; ++i) t[i] = static_cast<float>(kIq4Values[i]);
  return t;
}

inline void decode_iq4_block(const uint8_t* qs, float dl, V16F grid, float* y) {
  const V16I q = load16(qs);
  const V16F lo = dl * __builtin_shuffle(grid, q & 0xf), hi = dl * __builtin_shuffle(grid, q >> 4);
  std::memcpy(y, &lo, 64);
  std::memcpy(y + 16, &hi, 64);
}

inline void decode_iq4_nl_all(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  const V16F grid = iq4_grid();
  for (int64_t b = 0; b < n / 32; ++b, in += 18, y += 32) decode_iq4_block(in + 2, load_half_bytes(in), grid, y);
}

inline void decode_iq4_xs_all(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  const V16F grid = iq4_grid();
  for (int64_t b = 0; b < n / 256; ++b, in += 136) {
    const float d = load_half_bytes(in);
    uint16_t scales_h;
    std::memcpy(&scales_h, in + 2, 2);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const int ls = ((in[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
      decode_iq4_block(in + 8 + 16 * ib, d * static_cast<float>(ls - 32), grid, y);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// This ISA's table (gguf_simd.h).

inline void encode_q4_K_lanes_all(const float* x, int64_t n, uint8_t* out) { encode_kquant<15, 144>(x, n, out); }
inline void encode_q5_K_lanes_all(const float* x, int64_t n, uint8_t* out) { encode_kquant<31, 176>(x, n, out); }

#include "kernels/gguf/gguf_kquant_search_inl.h"

#include "kernels/gguf/gguf_decoders_inl.h"

inline constexpr SimdKernel kSimdKernels[] = {
    {GgmlType::kQ4_0, encode_legacy<Legacy::kQ4_0, 18>, nullptr, nullptr, nullptr},
    {GgmlType::kQ4_1, encode_legacy<Legacy::kQ4_1, 20>, nullptr, nullptr, nullptr},
    {GgmlType::kQ5_0, encode_legacy<Legacy::kQ5_0, 22>, decode_q5_0_vectorised, nullptr, nullptr},
    {GgmlType::kQ5_1, encode_legacy<Legacy::kQ5_1, 24>, decode_q5_1_vectorised, nullptr, nullptr},
    {GgmlType::kQ8_0, encode_legacy<Legacy::kQ8_0, 34>, nullptr, search_q8_0, nullptr},
    {GgmlType::kQ2_K, encode_q2_K_all, decode_q2_K_all, search_q2_K, nullptr},
    {GgmlType::kQ3_K, encode_q3_K_all, decode_q3_K_all, search_q3_K, nullptr},
    {GgmlType::kQ4_K, encode_q4_K_lanes_all, nullptr, search_kquant<15, 144>, fast_kquant<15, 144>},
    {GgmlType::kQ5_K, encode_q5_K_lanes_all, nullptr, search_kquant<31, 176>, fast_kquant<31, 176>},
    {GgmlType::kQ6_K, encode_q6_K_all, decode_q6_K_vectorised, search_q6_K, nullptr},
    {GgmlType::kIQ4_NL, encode_iq4_nl_all, decode_iq4_nl_all, nullptr, nullptr},
    {GgmlType::kIQ4_XS, encode_iq4_xs_all, decode_iq4_xs_all, nullptr, nullptr},
};

std::span<const SimdKernel> simd_kernels() { return kSimdKernels; }
