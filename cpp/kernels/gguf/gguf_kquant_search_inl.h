// The search encoders (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0) and the Q4_K / Q5_K fast fit, with one
// sub-block (Q8_0: one block) per lane: the same block formats as ggml's reference quantizers,
// lower squared error; every search keeps ggml's block wherever that is better.
//
// Included by gguf_kquant_lanes_inl.h (after its helpers) in every ISA's namespace, the baseline
// one included. Every lane's arithmetic is a fixed sequence of float operations on its own
// sub-block, and the per-super-block sums run over lanes in a fixed order, so the bytes are the
// same whatever the lane count: every ISA path writes the same file.
//
// Q4_K / Q5_K search, per super-block:
//  1. ggml's own block (encode_kquant_lanes), the one to beat.
//  2. Each sub-block's continuous fit: make_qkx2_quants with unit weights, i.e. least squares on
//     the error the decoder makes (ggml weights by av_x + |x|, favouring large values).
//  3. Super-block scales d and dmin from the largest fitted scale and min, times a few factors:
//     the sub-block values are rounded to 6 bits against them, and a slightly different d often
//     rounds them better. Each of the 15 factor pairs is ranked with every sub-block's stored 6-bit
//     scale and min chosen between the floor and ceiling of its fitted values (4 candidates) by the
//     exact decoded error, codes re-rounded for each; the two best pairs then choose among 16
//     neighbours (floor - 1 .. floor + 2 of each). Ranking with 4 instead of 16 made the search
//     1.5x faster for 1-2% of its gain over ggml (bench/bench_gguf.py).
//  4. Refit each sub-block's scale and min by least squares to the codes chosen and choose again,
//     while that lowers the super-block's error.
//  5. Keep the searched block only where its decoded error (in double) is below ggml's.
// The other searches (further down) follow the same plan with their layouts' parameters.

// v (>= 0, finite) rounded to a value fp16 represents exactly: 11 significant bits by Veltkamp's
// split (exact float operations, no FMA) in fp16's normal range, a multiple of 2^-24 (fp16's
// subnormal step: adding 0.75 leaves exactly that precision) below it, at most 65504. The
// candidates' scales are what the block can store, in vector operations (a per-lane conversion
// cost more than the search).
inline VF round_to_half_lanes(VF v) {
  const VF c = v * 8193.0f;  // 2^13 + 1
  const VF normal = c - (c - v);
  const VF subnormal = (v + 0.75f) - 0.75f;
  return min_lanes(v < 6.103515625e-05f ? subnormal : normal, VF{} + 65504.0f);  // 2^-14
}

// The decoder's squared error on every lane's sub-block of N values for decoded scale d1 and min
// m1 (x ~ d1 q - m1, q in [kMinCode, kMaxCode]), with the codes that round t = (x + m1) / d1 best
// (through a reciprocal: the searches only rank candidates), measured in code units,
// d1^2 * sum (q - t)^2, which saves two operations a value. A zero scale decodes every code to
// -m1: its lanes get q = 0, t = x + m1 and weight 1. Four partial sums (element i into sum i % 4)
// so that the additions do not wait on each other.
template <int kMinCode, int kMaxCode, int N = 32>
inline VF code_error_lanes(const VF* x, VF d1, VF m1) {
  const VI zero_scale = d1 == 0;
  const VF inv = zero_scale ? VF{} + 1 : 1 / d1;
  const VF min_code = zero_scale ? VF{} : VF{} + static_cast<float>(kMinCode);
  const VF max_code = zero_scale ? VF{} : VF{} + static_cast<float>(kMaxCode);
  auto squared_error = [&](int i) {
    const VF t = (x[i] + m1) * inv;
    const VF q = min_lanes(max_lanes((t + 12582912.f) - 12582912.f, min_code), max_code);
    const VF diff = q - t;
    return diff * diff;
  };
  VF e0 = VF{}, e1 = VF{}, e2 = VF{}, e3 = VF{};
  for (int i = 0; i < N; i += 4) {
    e0 += squared_error(i);
    e1 += squared_error(i + 1);
    e2 += squared_error(i + 2);
    e3 += squared_error(i + 3);
  }
  return (zero_scale ? VF{} + 1 : d1 * d1) * ((e0 + e1) + (e2 + e3));
}

template <int kMaxCode>
inline VI subblock_codes_lanes(VF x, VF d1, VF m1) {
  const VF inv = d1 != 0 ? 1 / d1 : VF{};
  return __builtin_convertvector(round_clamp_lanes((x + m1) * inv, 0, kMaxCode), VI);
}

// For every lane: the stored scale and min (ls, lm in 0..kMaxParam, as floats: 6-bit for Q4_K /
// Q5_K, 4-bit for Q2_K) among the neighbours of its target scale and min in units of d and dmin
// (floor + kFrom .. floor + kTo) with the lowest error on its N values, and that error.
template <int kMaxCode, int kFrom = -1, int kTo = 2, int N = 32, int kMaxParam = 63>
inline VF choose_scale_min_lanes(const VF* x, VF d, VF dmin, VF target_scale, VF target_min, VF* ls, VF* lm) {
  constexpr float kMax = kMaxParam;
  auto base = [](VF target, VF unit) {  // floor(target / unit) in [0, kMaxParam]; targets are >= 0
    VF t = unit > 0 ? target / unit : VF{};
    t = t < 0 ? VF{} : t;
    t = t > kMax ? VF{} + kMax : t;
    return __builtin_convertvector(__builtin_convertvector(t, VI), VF);
  };
  const VF s0 = base(target_scale, d), m0 = base(target_min, dmin);
  VF best = VF{} + __builtin_inff();
  for (int a = kFrom; a <= kTo; ++a) {
    const VF s = s0 + static_cast<float>(a);
    const VI s_valid = (s >= 0) & (s <= kMax);
    for (int b = kFrom; b <= kTo; ++b) {
      const VF m = m0 + static_cast<float>(b);
      const VI valid = s_valid & (m >= 0) & (m <= kMax);
      const VF error = code_error_lanes<0, kMaxCode, N>(x, d * s, dmin * m);
      const VI better = valid & (error < best);
      best = better ? error : best;
      *ls = better ? s : *ls;
      *lm = better ? m : *lm;
    }
  }
  return best;
}

// Least-squares scale and min of every lane's N values for its codes (x ~ scale * q - min, min >= 0
// as ggml clamps it); lanes without a positive fit keep the given values.
template <int N = 32>
inline void refit_scale_min_lanes(const VF* x, const VI* codes, VF* scale, VF* min) {
  VF sl = VF{}, sll = VF{}, sx = VF{}, sxl = VF{};
  for (int i = 0; i < N; ++i) {
    const VF q = __builtin_convertvector(codes[i], VF);
    sl += q;
    sll += q * q;
    sx += x[i];
    sxl += x[i] * q;
  }
  constexpr float n = N;
  const VF det = n * sll - sl * sl;
  VF a = (n * sxl - sx * sl) / det, b = (sll * sx - sl * sxl) / det;  // x ~ a q + b
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

// Per lane, its super-block's unit for 6-bit values: fp16(max over the super-block's 8 lanes of v,
// times factor, / 63), as the block stores it.
inline VF superblock_unit(VF v, float factor) {
  VF unit;
  for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
    float max = 0;
    for (int j = 0; j < 8; ++j) max = std::max(max, v[8 * sb + j]);
    const float u = baseline::half_to_float(baseline::float_to_half(max * factor / 63.f));
    for (int j = 0; j < 8; ++j) unit[8 * sb + j] = u;
  }
  return unit;
}

// Writes super-block sb of the call from its 256 values x: d and dmin, the lanes' 6-bit scales and
// mins ls / lm, and the codes, rounded as subblock_codes_lanes rounds them (the same float
// operations) but 16 consecutive values at a time, so that they pack without a transpose.
template <int kMaxCode, int kBlockBytes>
void store_kquant_superblock(VF d, VF dmin, VF ls, VF lm, const float* x, int sb, uint8_t* block) {
  uint8_t ls8[8], lm8[8];
  V16I codes[8][2];
  for (int j = 0; j < 8; ++j) {
    const int k = 8 * sb + j;
    ls8[j] = static_cast<uint8_t>(ls[k]);
    lm8[j] = static_cast<uint8_t>(lm[k]);
    const float d1 = d[k] * ls[k], m1 = dmin[k] * lm[k];
    const float inv = d1 != 0 ? 1 / d1 : 0.0f;
    for (int h = 0; h < 2; ++h) {
      V16F v;
      std::memcpy(&v, x + 32 * j + 16 * h, sizeof v);
      codes[j][h] = __builtin_convertvector(round_clamp_lanes<V16F>((v + m1) * inv, 0, kMaxCode), V16I);
    }
  }
  store_half_bytes(block, d[8 * sb]);
  store_half_bytes(block + 2, dmin[8 * sb]);
  reference_parts::pack_scales_mins(ls8, lm8, block + 4);
  auto store16 = [](uint8_t* p, V16I v) {
    const V16B b = __builtin_convertvector(v, V16B);
    std::memcpy(p, &b, 16);
  };
  // Element l of sub-blocks 2p and 2p + 1 share byte 32p + l of the codes (low and high nibble).
  // Q5_K keeps the fifth bits apart: bits 2p and 2p + 1 of qh[l].
  uint8_t* low = block + (kMaxCode == 15 ? 16 : 48);
  V16I high[2] = {};
  for (int p = 0; p < 4; ++p) {
    for (int h = 0; h < 2; ++h) {
      const V16I a = codes[2 * p][h], b = codes[2 * p + 1][h];
      store16(low + 32 * p + 16 * h, (a & 15) | ((b & 15) << 4));
      if constexpr (kMaxCode == 31) high[h] |= ((a >> 4) << (2 * p)) | ((b >> 4) << (2 * p + 1));
    }
  }
  if constexpr (kMaxCode == 31) {
    store16(block + 16, high[0]);
    store16(block + 32, high[1]);
  }
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
  VF d = VF{}, dmin = VF{}, ls = VF{}, lm = VF{};
  double best[kSuperBlocksPerCall];
  for (double& b : best) b = __builtin_inf();
  // Every factor pair is ranked with each sub-block's scale and min only floored or ceiled (4
  // candidates); the super-block's two best pairs then get the full neighbourhood (16 each).
  VF second_d = VF{}, second_dmin = VF{};
  double second[kSuperBlocksPerCall];
  for (double& b : second) b = __builtin_inf();
  for (float fd : kScaleFactors) {
    for (float fm : kMinFactors) {
      const VF trial_d = superblock_unit(target_scale, fd), trial_dmin = superblock_unit(target_min, fm);
      VF trial_ls = VF{}, trial_lm = VF{};
      const VF error = choose_scale_min_lanes<kMaxCode, 0, 1>(X, trial_d, trial_dmin, target_scale, target_min,
                                                              &trial_ls, &trial_lm);
      VI take = VI{}, runner_up = VI{};
      for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
        const double e = superblock_sum(error, sb);
        if (e < best[sb]) {
          second[sb] = best[sb];
          best[sb] = e;
          for (int j = 0; j < 8; ++j) take[8 * sb + j] = -1;
        } else if (e < second[sb]) {
          second[sb] = e;
          for (int j = 0; j < 8; ++j) runner_up[8 * sb + j] = -1;
        }
      }
      second_d = take ? d : runner_up ? trial_d : second_d;
      second_dmin = take ? dmin : runner_up ? trial_dmin : second_dmin;
      d = take ? trial_d : d;
      dmin = take ? trial_dmin : dmin;
      ls = take ? trial_ls : ls;
      lm = take ? trial_lm : lm;
    }
  }
  for (int k = 0; k < 2; ++k) {
    const VF wide_d = k == 0 ? d : second_d, wide_dmin = k == 0 ? dmin : second_dmin;
    VF wide_ls = ls, wide_lm = lm;
    const VF error = choose_scale_min_lanes<kMaxCode>(X, wide_d, wide_dmin, target_scale, target_min, &wide_ls,
                                                      &wide_lm);
    VI take = VI{};
    for (int sb = 0; sb < kSuperBlocksPerCall; ++sb) {
      const double e = superblock_sum(error, sb);
      if (e < best[sb] && wide_d[8 * sb] > 0) {
        best[sb] = e;
        for (int j = 0; j < 8; ++j) take[8 * sb + j] = -1;
      }
    }
    d = take ? wide_d : d;
    dmin = take ? wide_dmin : dmin;
    ls = take ? wide_ls : ls;
    lm = take ? wide_lm : lm;
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
    store_kquant_superblock<kMaxCode, kBlockBytes>(d, dmin, ls, lm, x + 256 * sb, sb, out + sb * kBlockBytes);
  }
}

template <int kMaxCode, int kBlockBytes>
void search_kquant(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<256, kBlockBytes, kSuperBlocksPerCall>(x, n, out, search_kquant_lanes<kMaxCode, kBlockBytes>);
}

// ------------------------------------------------------------------------------------------------
// The fast fit of Q4_K and Q5_K (the kquant scheme's `rtn`): ggml's block format at about ggml's
// reference error or below (Q4_K +-0.3%, Q5_K 2% lower on Gaussian data) with a fraction of its
// passes over the data (ggml scans 20 candidate scales, each with a weighted least-squares fit):
//  1. each sub-block's min/max (min clamped to <= 0, as ggml does), one least-squares refit to
//     the codes they give;
//  2. d and dmin from the largest scale and min of the super-block;
//  3. three times: each sub-block's stored 6-bit scale and min chosen between the floor and ceiling
//     of its fitted values by the exact decoded error, then refitted to the codes chosen; a lane
//     keeps the best choice of the rounds.
// Lanes are sub-blocks and the super-block steps are exact maxima, so every path writes the same
// bytes (the scalar path runs this code compiled for baseline x86-64).
template <int kMaxCode, int kBlockBytes>
void fast_kquant_lanes(const float* x, uint8_t* out, int valid_superblocks) {
  VF X[32];
  load_subblock_lanes(x, X);
  VF lo = X[0], hi = X[0];
  for (int i = 1; i < 32; ++i) {
    lo = min_lanes(lo, X[i]);
    hi = max_lanes(hi, X[i]);
  }
  lo = min_lanes(lo, VF{});  // x = scale * q - min with min >= 0: the range includes 0
  VF scale = (hi - lo) / static_cast<float>(kMaxCode), min = -lo;
  VI codes[32];
  for (int i = 0; i < 32; ++i) codes[i] = subblock_codes_lanes<kMaxCode>(X[i], scale, min);
  refit_scale_min_lanes(X, codes, &scale, &min);

  const VF d = superblock_unit(scale, 1.0f), dmin = superblock_unit(min, 1.0f);
  VF ls = VF{}, lm = VF{}, best = VF{} + __builtin_inff();
  for (int round = 0; round < 3; ++round) {
    VF next_ls = VF{}, next_lm = VF{};
    const VF error = choose_scale_min_lanes<kMaxCode, 0, 1>(X, d, dmin, scale, min, &next_ls, &next_lm);
    const VI better = error < best;
    best = better ? error : best;
    ls = better ? next_ls : ls;
    lm = better ? next_lm : lm;
    if (round == 2) break;
    scale = d * next_ls;
    min = dmin * next_lm;
    for (int i = 0; i < 32; ++i) codes[i] = subblock_codes_lanes<kMaxCode>(X[i], scale, min);
    refit_scale_min_lanes(X, codes, &scale, &min);
  }
  for (int sb = 0; sb < valid_superblocks; ++sb) {
    store_kquant_superblock<kMaxCode, kBlockBytes>(d, dmin, ls, lm, x + 256 * sb, sb, out + sb * kBlockBytes);
  }
}

template <int kMaxCode, int kBlockBytes>
void fast_kquant(const float* x, int64_t n, uint8_t* out) {
  encode_in_calls<256, kBlockBytes, kSuperBlocksPerCall>(x, n, out, fast_kquant_lanes<kMaxCode, kBlockBytes>);
}

// ------------------------------------------------------------------------------------------------
// The search encoder of Q8_0, one 32-value block per lane. ggml stores d = amax / 127 (as fp16)
// and rounds x / d; with 255 levels, which scale near that one fits a block best depends on where
// its 32 values fall between the levels, so trying kQ8Candidates fp16 scales from 0.97 to 1.01
// times ggml's lowers the error about 8% on Gaussian values (codes rounded to nearest in
// [-128, 127]). A block keeps ggml's bytes unless the searched block's error (in double) is lower.
inline constexpr int kQ8Candidates = 32;

inline void search_q8_0_lanes(const float* x, uint8_t* out, int valid_blocks) {
  encode_legacy_lanes<Legacy::kQ8_0>(x, out, valid_blocks);
  VF X[32];
  load_subblock_lanes(x, X);
  VF amax = VF{};
  for (int j = 0; j < 32; ++j) amax = max_lanes(amax, abs_lanes(X[j]));
  VF best_d = VF{}, best_error = VF{} + __builtin_inff();
  for (int c = 0; c < kQ8Candidates; ++c) {
    const float factor = 0.97f + 0.04f * static_cast<float>(c) / static_cast<float>(kQ8Candidates - 1);
    const VF d = round_to_half_lanes(amax * (factor / 127.0f));
    const VF error = code_error_lanes<-128, 127>(X, d, VF{});
    const VI better = (d != 0) & (error < best_error);
    best_error = better ? error : best_error;
    best_d = better ? d : best_d;
  }
  const VF inv = best_d != 0 ? 1 / best_d : VF{};
  VI q[32];
  for (int j = 0; j < 32; ++j) q[j] = __builtin_convertvector(round_clamp_lanes(X[j] * inv, -128, 127), VI);
  for (int k = 0; k < valid_blocks; ++k) {
    uint8_t* block = out + 34 * k;
    const float ggml_d = load_half_bytes(block);
    double ours = 0, theirs = 0;
    for (int j = 0; j < 32; ++j) {
      const double a = static_cast<double>(best_d[k] * static_cast<float>(q[j][k])) - X[j][k];
      const double b = static_cast<double>(ggml_d * static_cast<float>(static_cast<int8_t>(block[2 + j]))) - X[j][k];
      ours += a * a;
      theirs += b * b;
    }
    if (!(ours < theirs)) continue;
    store_half_bytes(block, best_d[k]);
    for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q[j][k]));
  }
}

inline void search_q8_0(const float* x, int64_t n, uint8_t* out) { encode_in_calls<32, 34, kLanes>(x, n, out, search_q8_0_lanes); }

// ------------------------------------------------------------------------------------------------
// The search encoders of Q6_K and Q3_K: 16 sub-blocks of 16 values with signed codes and signed
// integer sub-block scales against one fp16 d (Q6_K: codes in [-32, 31], 8-bit scales; Q3_K:
// codes in [-4, 3], 6-bit scales). ggml fits each sub-block's scale among candidates within a few
// percent of max / kMinCode; letting the largest value be clipped (or map to kMaxCode) finds
// better scales, and the stored scale is then chosen between the floor and ceiling of the fitted
// one by the error of the codes re-rounded for it, refitted and chosen again, for three
// super-block scales d. The super-block keeps the better of that block and ggml's reference block
// by the decoded squared error: never worse than ggml's. On Gaussian values the relative RMSE is
// about 5% (Q6_K) and 0.5% (Q3_K: three fitting steps; eight gained another 0.2% at 1.4x the
// time) lower than the better of ggml's reference and its importance-weighted quantizer with an
// all-ones matrix (this search before; as a third candidate it changed the error by less than
// 0.01%, so it is not tried).
struct Q6KLayout {
  static constexpr GgmlType kType = GgmlType::kQ6_K;
  static constexpr int kBytes = 210, kMinCode = -32, kMaxCode = 31, kMinScale = -128, kMaxScale = 127;
  static void reference(const float* x, uint8_t* out) { encode_q6_K_superblock(x, out); }
  // codes: 256 values in [kMinCode, kMaxCode] + 32 (0..63); scales: the 16 signed scales.
  static void store(const uint8_t* codes, const int* scales, float d, uint8_t* out) {
    pack_q6_K_codes(codes, out, out + 128);
    for (int j = 0; j < 16; ++j) out[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(scales[j]));
    store_half_bytes(out + 208, d);
  }
  static constexpr int kCodeOffset = 32;
  static constexpr float kFitSteps[] = {0.85f, 0.886f, 0.921f, 0.957f, 0.993f, 1.029f, 1.064f, 1.1f};
};

struct Q3KLayout {
  static constexpr GgmlType kType = GgmlType::kQ3_K;
  static constexpr int kBytes = 110, kMinCode = -4, kMaxCode = 3, kMinScale = -32, kMaxScale = 31;
  static void reference(const float* x, uint8_t* out) { encode_q3_K_superblock(x, out); }
  static void store(const uint8_t* codes, const int* scales, float d, uint8_t* out) {
    pack_q3_K_codes(codes, out, out + 32);
    std::memset(out + 96, 0, 12);
    for (int j = 0; j < 16; ++j) pack_q3_scale(out + 96, j, scales[j] + 32);
    store_half_bytes(out + 108, d);
  }
  static constexpr int kCodeOffset = 4;
  static constexpr float kFitSteps[] = {0.85f, 0.95f, 1.05f};
};

inline constexpr float kSymmetricScaleFactors[] = {1.0f, 0.98f, 1.02f};
inline constexpr int kSymmetricPasses = 16 / kLanes;

// Least-squares scale of every lane's 16 values for the codes s rounds them to.
template <int kMinCode, int kMaxCode>
inline VF refit_symmetric_scale_lanes(const VF* x, VF s) {
  const VF inv = s != 0 ? 1 / s : VF{};
  VF sxq = VF{}, sqq = VF{};
  for (int i = 0; i < 16; ++i) {
    const VF q = round_clamp_lanes(x[i] * inv, kMinCode, kMaxCode);
    sxq += x[i] * q;
    sqq += q * q;
  }
  return sqq > 0 ? sxq / sqq : s;
}

// Every lane's continuous scale: from its largest-magnitude value mapped to kMaxCode or kMinCode
// times each of the layout's kFitSteps, each refitted twice, the one with the lowest error.
template <typename Layout>
inline VF fit_symmetric_scale_lanes(const VF* x) {
  constexpr int kMinCode = Layout::kMinCode, kMaxCode = Layout::kMaxCode;
  VF amax;
  const VF max = largest_magnitude_lanes<16>(x, &amax);
  VF best_scale = VF{}, best_error = VF{} + __builtin_inff();
  for (float step : Layout::kFitSteps) {
    for (float target : {static_cast<float>(kMaxCode), static_cast<float>(kMinCode)}) {
      VF s = max / (target * step);
      s = refit_symmetric_scale_lanes<kMinCode, kMaxCode>(x, refit_symmetric_scale_lanes<kMinCode, kMaxCode>(x, s));
      const VF error = code_error_lanes<kMinCode, kMaxCode, 16>(x, s, VF{});
      const VI better = error < best_error;
      best_error = better ? error : best_error;
      best_scale = better ? s : best_scale;
    }
  }
  return best_scale;
}

template <typename Layout>
inline void search_symmetric_superblock(const float* x, uint8_t* out) {
  constexpr int kMinCode = Layout::kMinCode, kMaxCode = Layout::kMaxCode;
  const DecodeFn decode = find_type(static_cast<int32_t>(Layout::kType))->decode;
  Layout::reference(x, out);
  const double best = reference_parts::block_error(decode, out, x);
  uint8_t candidate[Layout::kBytes];
  VF X[kSymmetricPasses][16], fitted[kSymmetricPasses];
  for (int p = 0; p < kSymmetricPasses; ++p) {
    load_subblock_lanes<16>(x + 16 * kLanes * p, X[p]);
    fitted[p] = fit_symmetric_scale_lanes<Layout>(X[p]);
  }
  float max_scale = 0;  // the fitted scale of largest magnitude, sign kept
  for (int p = 0; p < kSymmetricPasses; ++p) {
    for (int k = 0; k < kLanes; ++k) max_scale = std::fabs(fitted[p][k]) > std::fabs(max_scale) ? fitted[p][k] : max_scale;
  }
  if (max_scale == 0) return;
  constexpr float kMin = Layout::kMinScale, kMax = Layout::kMaxScale;
  double best_sum = __builtin_inf();
  float best_d = 0;
  VF best_ls[kSymmetricPasses] = {};
  for (float factor : kSymmetricScaleFactors) {
    // ggml maps the largest scale to the most negative stored scale; d may be negative.
    const float d = baseline::half_to_float(baseline::float_to_half(max_scale * factor / kMin));
    if (d == 0) continue;
    double sum = 0;
    VF chosen_ls[kSymmetricPasses];
    for (int p = 0; p < kSymmetricPasses; ++p) {
      VF s = fitted[p], ls = VF{}, lowest = VF{} + __builtin_inff();
      for (int round = 0; round < 2; ++round) {
        const VF ratio = s / d;
        const VF toward_zero = __builtin_convertvector(__builtin_convertvector(ratio, VI), VF);
        const VF floor = toward_zero > ratio ? toward_zero - 1 : toward_zero;
        for (int a = 0; a <= 1; ++a) {
          const VF l = min_lanes(max_lanes(floor + static_cast<float>(a), VF{} + kMin), VF{} + kMax);
          const VF error = code_error_lanes<kMinCode, kMaxCode, 16>(X[p], d * l, VF{});
          const VI better = error < lowest;
          lowest = better ? error : lowest;
          ls = better ? l : ls;
        }
        s = refit_symmetric_scale_lanes<kMinCode, kMaxCode>(X[p], d * ls);
      }
      chosen_ls[p] = ls;
      for (int k = 0; k < kLanes; ++k) sum += lowest[k];
    }
    if (sum < best_sum) {
      best_sum = sum;
      best_d = d;
      for (int p = 0; p < kSymmetricPasses; ++p) best_ls[p] = chosen_ls[p];
    }
  }
  if (best_d == 0) return;
  uint8_t codes[256];
  int scales[16];
  for (int p = 0; p < kSymmetricPasses; ++p) {
    const VF d1 = best_d * best_ls[p];
    const VF inv = d1 != 0 ? 1 / d1 : VF{};
    for (int i = 0; i < 16; ++i) {
      const VI q = __builtin_convertvector(round_clamp_lanes(X[p][i] * inv, kMinCode, kMaxCode), VI) + Layout::kCodeOffset;
      for (int k = 0; k < kLanes; ++k) codes[16 * (kLanes * p + k) + i] = static_cast<uint8_t>(q[k]);
    }
    for (int k = 0; k < kLanes; ++k) scales[kLanes * p + k] = static_cast<int>(best_ls[p][k]);
  }
  Layout::store(codes, scales, best_d, candidate);
  if (reference_parts::block_error(decode, candidate, x) < best) std::memcpy(out, candidate, Layout::kBytes);
}

template <typename Layout>
inline void search_symmetric(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 256; ++b) search_symmetric_superblock<Layout>(x + 256 * b, out + Layout::kBytes * b);
}
inline void search_q6_K(const float* x, int64_t n, uint8_t* out) { search_symmetric<Q6KLayout>(x, n, out); }
inline void search_q3_K(const float* x, int64_t n, uint8_t* out) { search_symmetric<Q3KLayout>(x, n, out); }

// ------------------------------------------------------------------------------------------------
// The search encoder of Q2_K: 16 sub-blocks of 16 values, codes 0..3, 4-bit scales and mins
// against fp16 d and dmin. Each sub-block is fitted by least squares from three starting ranges
// (its min/max range and that range shrunk to 85% and 70% about its middle: at 4 levels letting
// the extremes clip often pays), d and dmin come from the largest fitted scale and min, and each
// stored 4-bit scale and min is chosen among the neighbours of its fitted values by the error of
// the codes re-rounded for them, refitted and chosen again. The super-block keeps the better of
// that block and ggml's reference block by the decoded squared error: never worse than ggml's.
inline constexpr float kQ2FitRanges[] = {1.0f, 0.85f, 0.7f};

inline void fit_q2_scale_min_lanes(const VF* x, VF* scale_out, VF* min_out) {
  VF lo = x[0], hi = x[0];
  for (int i = 1; i < 16; ++i) {
    lo = min_lanes(lo, x[i]);
    hi = max_lanes(hi, x[i]);
  }
  lo = min_lanes(lo, VF{});  // x = scale * q - min with min >= 0: the range includes 0
  const VF middle = (hi + lo) * 0.5f, half = (hi - lo) * 0.5f;
  VF best = VF{} + __builtin_inff();
  for (float range : kQ2FitRanges) {
    VF scale = half * (2 * range / 3), min = max_lanes(-(middle - half * range), VF{});
    for (int round = 0; round < 4; ++round) {
      VI codes[16];
      for (int i = 0; i < 16; ++i) codes[i] = subblock_codes_lanes<3>(x[i], scale, min);
      refit_scale_min_lanes<16>(x, codes, &scale, &min);
    }
    const VF error = code_error_lanes<0, 3, 16>(x, scale, min);
    const VI better = error < best;
    best = better ? error : best;
    *scale_out = better ? scale : *scale_out;
    *min_out = better ? min : *min_out;
  }
}

inline void search_q2_K_superblock(const float* x, uint8_t* out) {
  const DecodeFn decode = find_type(static_cast<int32_t>(GgmlType::kQ2_K))->decode;
  encode_q2_K_superblock(x, out);
  VF X[kQ2Passes][16], scale[kQ2Passes] = {}, min[kQ2Passes] = {};
  float max_scale = 0, max_min = 0;
  for (int p = 0; p < kQ2Passes; ++p) {
    load_subblock_lanes<16>(x + 16 * kLanes * p, X[p]);
    fit_q2_scale_min_lanes(X[p], &scale[p], &min[p]);
    for (int k = 0; k < kLanes; ++k) {
      max_scale = std::max(max_scale, scale[p][k]);
      max_min = std::max(max_min, min[p][k]);
    }
  }
  const float d = baseline::half_to_float(baseline::float_to_half(max_scale / 15.f));
  const float dmin = baseline::half_to_float(baseline::float_to_half(max_min / 15.f));
  if (d == 0) return;
  uint8_t candidate[84], codes[256];
  for (int p = 0; p < kQ2Passes; ++p) {
    const VF vd = VF{} + d, vdmin = VF{} + dmin;
    VF ls = VF{}, lm = VF{}, best = VF{} + __builtin_inff(), s = scale[p], m = min[p];
    for (int round = 0; round < 2; ++round) {
      VF next_ls = VF{}, next_lm = VF{};
      const VF error = choose_scale_min_lanes<3, -1, 2, 16, 15>(X[p], vd, vdmin, s, m, &next_ls, &next_lm);
      const VI better = error < best;
      best = better ? error : best;
      ls = better ? next_ls : ls;
      lm = better ? next_lm : lm;
      s = d * next_ls;
      m = dmin * next_lm;
      VI round_codes[16];
      for (int i = 0; i < 16; ++i) round_codes[i] = subblock_codes_lanes<3>(X[p][i], s, m);
      refit_scale_min_lanes<16>(X[p], round_codes, &s, &m);
    }
    const VF d1 = d * ls, m1 = dmin * lm;
    for (int i = 0; i < 16; ++i) {
      const VI q = subblock_codes_lanes<3>(X[p][i], d1, m1);
      for (int k = 0; k < kLanes; ++k) codes[16 * (kLanes * p + k) + i] = static_cast<uint8_t>(q[k]);
    }
    for (int k = 0; k < kLanes; ++k) {
      candidate[kLanes * p + k] = static_cast<uint8_t>(static_cast<int>(ls[k]) | (static_cast<int>(lm[k]) << 4));
    }
  }
  pack_q2_K_codes(codes, candidate + 16);
  store_half_bytes(candidate + 80, d);
  store_half_bytes(candidate + 82, dmin);
  if (reference_parts::block_error(decode, candidate, x) < reference_parts::block_error(decode, out, x)) {
    std::memcpy(out, candidate, 84);
  }
}

inline void search_q2_K(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 256; ++b) search_q2_K_superblock(x + 256 * b, out + 84 * b);
}
