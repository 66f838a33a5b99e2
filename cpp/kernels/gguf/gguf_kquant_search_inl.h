// Search encoders of Q4_K and Q5_K with one 32-weight sub-block per lane: the same block format as
// ggml's reference quantizer, lower squared error, never worse on any super-block.
//
// Included by gguf_kquant_lanes_inl.h (after its helpers) in every ISA's namespace, the baseline
// one included. Every lane's arithmetic is a fixed sequence of float operations on its own
// sub-block, and the per-super-block sums run over lanes in a fixed order, so the bytes are the
// same whatever the lane count: every ISA path writes the same file.
//
// Per super-block:
//  1. ggml's own block (encode_kquant_lanes), the one to beat.
//  2. Each sub-block's continuous fit: make_qkx2_quants with unit weights, i.e. least squares on
//     the error the decoder makes (ggml weights by av_x + |x|, favouring large values).
//  3. Super-block scales d and dmin from the largest fitted scale and min, times a few factors:
//     the sub-block values are rounded to 6 bits against them, and a slightly different d often
//     rounds them better. For each, every sub-block's stored 6-bit scale and min are chosen among
//     the neighbours of its fitted values by the exact decoded error, codes re-rounded for each.
//  4. Refit each sub-block's scale and min by least squares to the codes chosen and choose again,
//     while that lowers the super-block's error.
//  5. Keep the searched block only where its decoded error (in double) is below ggml's.

// The decoder's squared error on every lane's sub-block for decoded scale d1 and min m1, with the
// codes that round (x + m1) / d1 best (through a reciprocal: the search only ranks candidates).
template <int kMaxCode>
inline VF subblock_error_lanes(const VF* x, VF d1, VF m1) {
  const VF inv = d1 != 0 ? 1 / d1 : VF{};
  VF error = VF{};
  for (int i = 0; i < 32; ++i) {
    const VF q = round_clamp_lanes((x[i] + m1) * inv, 0, kMaxCode);
    const VF diff = (d1 * q - m1) - x[i];
    error += diff * diff;
  }
  return error;
}

template <int kMaxCode>
inline VI subblock_codes_lanes(VF x, VF d1, VF m1) {
  const VF inv = d1 != 0 ? 1 / d1 : VF{};
  return __builtin_convertvector(round_clamp_lanes((x + m1) * inv, 0, kMaxCode), VI);
}

// For every lane: the 6-bit scale and min (ls, lm, as floats) among the neighbours of its target
// scale and min in units of d and dmin with the lowest error, and that error.
template <int kMaxCode>
inline VF choose_scale_min_lanes(const VF* x, VF d, VF dmin, VF target_scale, VF target_min, VF* ls, VF* lm) {
  auto base = [](VF target, VF unit) {  // floor(target / unit) in [0, 63]; targets are >= 0
    VF t = unit > 0 ? target / unit : VF{};
    t = t < 0 ? VF{} : t;
    t = t > 63 ? VF{} + 63 : t;
    return __builtin_convertvector(__builtin_convertvector(t, VI), VF);
  };
  const VF s0 = base(target_scale, d), m0 = base(target_min, dmin);
  VF best = VF{} + __builtin_inff();
  for (int a = -1; a <= 2; ++a) {
    const VF s = s0 + static_cast<float>(a);
    const VI s_valid = (s >= 0) & (s <= 63);
    for (int b = -1; b <= 2; ++b) {
      const VF m = m0 + static_cast<float>(b);
      const VI valid = s_valid & (m >= 0) & (m <= 63);
      const VF error = subblock_error_lanes<kMaxCode>(x, d * s, dmin * m);
      const VI better = valid & (error < best);
      best = better ? error : best;
      *ls = better ? s : *ls;
      *lm = better ? m : *lm;
    }
  }
  return best;
}

// Least-squares scale and min of every lane's sub-block for its codes (x ~ scale * q - min, min >= 0
// as ggml clamps it); lanes without a positive fit keep the given values.
inline void refit_scale_min_lanes(const VF* x, const VI* codes, VF* scale, VF* min) {
  VF sl = VF{}, sll = VF{}, sx = VF{}, sxl = VF{};
  for (int i = 0; i < 32; ++i) {
    const VF q = __builtin_convertvector(codes[i], VF);
    sl += q;
    sll += q * q;
    sx += x[i];
    sxl += x[i] * q;
  }
  const VF det = 32 * sll - sl * sl;
  VF a = (32 * sxl - sx * sl) / det, b = (sll * sx - sl * sxl) / det;  // x ~ a q + b
  const VI positive_b = b > 0;
  b = positive_b ? VF{} : b;
  a = positive_b ? (sll > 0 ? sxl / sll : VF{}) : a;
  const VI take = (det > 0) & (a > 0);
  *scale = take ? a : *scale;
  *min = take ? -b : *min;
}

// Sum of lanes 8 sb .. 8 sb + 7, in lane order.
inline double superblock_sum(VF v, int sb) {
  double sum = 0;
  for (int j = 0; j < 8; ++j) sum += v[8 * sb + j];
  return sum;
}

// The decoder's squared error of super-block sb for codes L and decoded scales d1, mins m1, in double.
inline double superblock_error(const VF* x, const VI* L, VF d1, VF m1, int sb) {
  double error = 0;
  for (int j = 0; j < 8; ++j) {
    const int k = 8 * sb + j;
    for (int i = 0; i < 32; ++i) {
      const double diff = static_cast<double>(d1[k] * static_cast<float>(L[i][k]) - m1[k]) - x[i][k];
      error += diff * diff;
    }
  }
  return error;
}

template <int kMaxCode, int kBlockBytes>
void search_kquant_lanes(const float* x, uint8_t* out, int valid_superblocks) {
  KquantLanes ggml;
  encode_kquant_lanes<kMaxCode, kBlockBytes>(x, out, valid_superblocks, &ggml);
  VF X[32], ones[32];
  load_subblock_lanes(x, X);
  for (VF& w : ones) w = VF{} + 1.0f;
  VI fit_codes[32];
  VF target_scale, target_min;
  make_qkx2_quants_lanes(X, ones, kMaxCode, -1.f, 0.1f, 20, fit_codes, &target_scale, &target_min);

  // Step 3: the super-block scales, per super-block the factors with the lowest error.
  static constexpr float kScaleFactors[] = {1.0f, 0.985f, 0.97f, 0.955f, 1.015f};
  static constexpr float kMinFactors[] = {1.0f, 0.97f, 1.03f};
  float max_scale[kSuperBlocksPerCall], max_min[kSuperBlocksPerCall];
  for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
    max_scale[sb] = max_min[sb] = 0;
    for (int j = 0; j < 8; ++j) {
      max_scale[sb] = std::max(max_scale[sb], target_scale[8 * sb + j]);
      max_min[sb] = std::max(max_min[sb], target_min[8 * sb + j]);
    }
  }
  VF d = VF{}, dmin = VF{}, ls = VF{}, lm = VF{};
  double best[kSuperBlocksPerCall];
  for (double& b : best) b = __builtin_inf();
  for (float fd : kScaleFactors) {
    for (float fm : kMinFactors) {
      VF trial_d, trial_dmin;
      for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
        const float dv = baseline::half_to_float(baseline::float_to_half(max_scale[sb] * fd / 63.f));
        const float mv = baseline::half_to_float(baseline::float_to_half(max_min[sb] * fm / 63.f));
        for (int j = 0; j < 8; ++j) {
          trial_d[8 * sb + j] = dv;
          trial_dmin[8 * sb + j] = mv;
        }
      }
      VF trial_ls = VF{}, trial_lm = VF{};
      const VF error = choose_scale_min_lanes<kMaxCode>(X, trial_d, trial_dmin, target_scale, target_min, &trial_ls, &trial_lm);
      VI take = VI{};
      for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
        const double e = superblock_sum(error, sb);
        if (e < best[sb]) {
          best[sb] = e;
          for (int j = 0; j < 8; ++j) take[8 * sb + j] = -1;
        }
      }
      d = take ? trial_d : d;
      dmin = take ? trial_dmin : dmin;
      ls = take ? trial_ls : ls;
      lm = take ? trial_lm : lm;
    }
  }
  // Step 4: refit to the codes chosen, choose again; a super-block keeps a round only if it helps
  // (one that did not improve would repeat the same choice, so it stops there).
  for (int round = 0; round < 3; ++round) {
    VI codes[32];
    for (int i = 0; i < 32; ++i) codes[i] = subblock_codes_lanes<kMaxCode>(X[i], d * ls, dmin * lm);
    VF scale = d * ls, min = dmin * lm;
    refit_scale_min_lanes(X, codes, &scale, &min);
    VF next_ls = ls, next_lm = lm;
    const VF error = choose_scale_min_lanes<kMaxCode>(X, d, dmin, scale, min, &next_ls, &next_lm);
    VI take = VI{};
    bool any = false;
    for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
      const double e = superblock_sum(error, sb);
      if (e < best[sb]) {
        best[sb] = e;
        any = true;
        for (int j = 0; j < 8; ++j) take[8 * sb + j] = -1;
      }
    }
    if (!any) break;
    ls = take ? next_ls : ls;
    lm = take ? next_lm : lm;
  }
  // Step 5: the searched block where it beats ggml's.
  const VF d1 = d * ls, m1 = dmin * lm;
  VI codes[32];
  for (int i = 0; i < 32; ++i) codes[i] = subblock_codes_lanes<kMaxCode>(X[i], d1, m1);
  for (int sb = 0; sb < valid_superblocks; ++sb) {
    if (!(superblock_error(X, codes, d1, m1, sb) < superblock_error(X, ggml.L, ggml.d1, ggml.m1, sb))) continue;
    uint8_t* block = out + sb * kBlockBytes;
    uint8_t ls8[8], lm8[8];
    for (int j = 0; j < 8; ++j) {
      ls8[j] = static_cast<uint8_t>(ls[8 * sb + j]);
      lm8[j] = static_cast<uint8_t>(lm[8 * sb + j]);
    }
    store_half_bytes(block, d[8 * sb]);
    store_half_bytes(block + 2, dmin[8 * sb]);
    reference_parts::pack_scales_mins(ls8, lm8, block + 4);
    pack_kquant_codes<kMaxCode, kBlockBytes>(codes, sb, block);
  }
}

template <int kMaxCode, int kBlockBytes>
void search_kquant(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<256, kBlockBytes, kSuperBlocksPerCall>(x, n, out, search_kquant_lanes<kMaxCode, kBlockBytes>);
}
