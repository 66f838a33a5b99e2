// The group loop shared by every ISA. Included *inside* each ISA's namespace after that ISA has
// defined `struct Ops` (its vector primitives), so each ISA gets its own copy compiled with its
// own flags and no inline function is shared between ISAs (no ODR mixing). Deliberately no
// include guard and no #include: the including file provides <cstdint> and <cstring>.
//
// Everything here that decides a value (group parameters, the wide fallback) is plain IEEE
// float/double arithmetic, compiled with -ffp-contract=off, so all ISAs agree bit for bit.

// How one group is encoded.
struct GroupParams {
  enum Kind : uint8_t {
    kFill,   // every code is fill_code (constant group, or all-zero symmetric group)
    kFloat,  // q = clamp(rne((x - offset) / scale + bias), 0, qmax) in float32
    kWide,   // as kFloat but the float32 difference x - offset could overflow: use doubles
  };
  float scale;
  float zero_point;
  float offset;
  float bias;
  Kind kind;
  uint8_t fill_code;
};

// Asymmetric: scale = (max - min) / qmax, zero_point = -min / scale. The per-element code uses
// (x - min) / scale, which equals x / scale + zero_point exactly in real arithmetic but keeps
// full precision when |min| >> scale (x / scale and zero_point would cancel catastrophically).
// The range is taken in double so it cannot overflow; the quotient always fits a float.
inline float asymmetric_scale(float lo, float hi, int bits) {
  const double qmax = static_cast<double>((1 << bits) - 1);
  return static_cast<float>((static_cast<double>(hi) - static_cast<double>(lo)) / qmax);
}

inline float asymmetric_zero_point(float lo, float scale) {
  return static_cast<float>(-static_cast<double>(lo) / static_cast<double>(scale));
}

// The parameters once scale and (for a non-zero scale) zero_point are known.
inline GroupParams asymmetric_group_params(float lo, float hi, float scale, float zero_point) {
  if (scale == 0.0f) {
    // Constant group (or a range below float resolution): scale = value, zero_point = -1 and
    // code 0 decode to (0 - (-1)) * value = value exactly, zero included.
    return {lo, -1.0f, 0.0f, 0.0f, GroupParams::kFill, 0};
  }
  const float range_f32 = hi - lo;
  const GroupParams::Kind kind = __builtin_isinf(range_f32) ? GroupParams::kWide : GroupParams::kFloat;
  return {scale, zero_point, lo, 0.0f, kind, 0};
}

inline GroupParams asymmetric_group_params(float lo, float hi, int bits) {
  const float scale = asymmetric_scale(lo, hi, bits);
  return asymmetric_group_params(lo, hi, scale, scale == 0.0f ? 0.0f : asymmetric_zero_point(lo, scale));
}

// Symmetric: zero_point = 2^(b-1); m = the element of largest magnitude, sign kept (a tie goes to
// the negative one); scale = m / -2^(b-1), so m itself decodes exactly (code 0).
inline GroupParams symmetric_group_params(float lo, float hi, int bits) {
  const float half = static_cast<float>(1 << (bits - 1));
  const float m = (__builtin_fabsf(hi) > __builtin_fabsf(lo)) ? hi : lo;
  const float scale = m / -half;
  if (scale == 0.0f) {
    // All zeros (or so tiny the scale underflows): scale +0, every code at the zero point.
    return {0.0f, half, 0.0f, 0.0f, GroupParams::kFill, static_cast<uint8_t>(1 << (bits - 1))};
  }
  return {scale, half, 0.0f, half, GroupParams::kFloat, 0};
}

// ---------------------------------------------------------------------------------------------
// Search: choose scale and offset by least squares over candidate scales (Method::kSearch).
//
// Each candidate rounds the group to codes with an inverse scale (qmax + r) / (max − min); the
// codes are anchored at the minimum (code 0 = min, so a smaller scale clips the top) or centred
// (code qmax/2 = the middle of the range, so it clips both ends). For the codes of a candidate the
// best scale a and offset b follow in closed form from Σq, Σq², Σxq, Σx, Σx²:
//   a = (nΣxq − ΣqΣx) / (nΣq² − (Σq)²),  b = (Σx − aΣq) / n,
// with the squared error expanded from the same sums. The best candidate is refined by
// alternating nearest codes and refits (Lloyd iterations), the codes are re-rounded for the final
// stored parameters (so they are the nearest codes for what is stored), and the result replaces
// RTN only if its exact decode error is lower by more than kSearchMargin.
// Symmetric groups fix the zero point at 2^(b-1) and fit the scale alone: x ≈ a (q − 2^(b-1)).
// The candidate sets were chosen by measurement (docs/search.md).
inline constexpr float kAnchoredSteps[] = {-1.0f, -1.0f / 3.0f, 1.0f / 3.0f, 1.0f};
inline constexpr float kCentredSteps[] = {0.0f, 1.5f};
inline constexpr float kSymmetricSteps[] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 2.0f};
inline constexpr int kRefinements = 2;
// Errors are summed in float32 lanes (relative error below 2e-5 for groups up to 4096); requiring
// this much improvement guarantees search is never worse than RTN in exact arithmetic.
inline constexpr double kSearchMargin = 1e-4;

// The sums of one candidate's codes. For least squares, the squared error is
// Σx² − (Σx)²/n − gain with gain = cov² / var (asymmetric: cov = nΣxq − ΣqΣx, var = n(nΣq² − (Σq)²);
// symmetric, in q' = q − h: cov = Σxq', var = Σq'²), so the best candidate is the one with the
// largest gain. Gains are compared by cross-multiplying: no division until the winner is known.
struct CandidateFit {
  double cov = 0.0, var = 0.0;
  int64_t sum_q = 0, sum_qq = 0;
  double sum_xq = 0.0;
  bool ok = false;

  bool better_than(const CandidateFit& o) const { return ok && (!o.ok || cov * cov * o.var > o.cov * o.cov * var); }
};

struct GroupMoments {
  double n, sum_x, sum_xx, h;
  bool symmetric;
};

inline CandidateFit candidate_fit(int64_t sum_q, int64_t sum_qq, double sum_xq, const GroupMoments& m) {
  CandidateFit f;
  f.sum_q = sum_q;
  f.sum_qq = sum_qq;
  f.sum_xq = sum_xq;
  const double q = static_cast<double>(sum_q), qq = static_cast<double>(sum_qq);
  if (m.symmetric) {
    f.cov = sum_xq - m.h * m.sum_x;
    f.var = qq - 2.0 * m.h * q + m.n * m.h * m.h;
    f.ok = f.var > 0.0;
  } else {
    f.cov = m.n * sum_xq - q * m.sum_x;
    f.var = m.n * (m.n * qq - q * q);
    f.ok = f.var > 0.0 && f.cov > 0.0;  // cov > 0: a positive scale
  }
  return f;
}

// The scale a and offset b of a fit: x ≈ a q + b (symmetric: x ≈ a (q − h), b = −a h).
struct ScaleOffset {
  double a, b;
};

inline ScaleOffset solve(const CandidateFit& f, const GroupMoments& m) {
  if (m.symmetric) {
    const double a = f.cov / f.var;
    return {a, -a * m.h};
  }
  const double a = f.cov * m.n / f.var;  // (nΣxq − ΣqΣx) / (nΣq² − (Σq)²)
  return {a, (m.sum_x - a * static_cast<double>(f.sum_q)) / m.n};
}

// Codes q = clamp(rne(fma(x, inverse, shift))) and their fit, where shift = bias − offset · inverse
// places the candidate's anchor. Σq and Σq² come from float32 lanes too, exactly: at most 256
// codes of at most 255 per lane keep every partial sum below 2^24.
inline CandidateFit fit_candidate(const float* x, int64_t n, float offset, float inverse, float bias, float qmax,
                                  const GroupMoments& m) {
  double sums[3];  // Σq, Σq², Σxq
  const float shift = static_cast<float>(static_cast<double>(bias) - static_cast<double>(offset) * inverse);
  Ops::candidate_sums(x, n, inverse, shift, qmax, sums);
  return candidate_fit(static_cast<int64_t>(sums[0]), static_cast<int64_t>(sums[1]), sums[2], m);
}

// Nearest codes for a fit's (a, b), refitted.
inline CandidateFit refit(const float* x, int64_t n, const ScaleOffset& s, float qmax, const GroupMoments& m) {
  const float inverse = static_cast<float>(1.0 / s.a);
  return m.symmetric ? fit_candidate(x, n, 0.0f, inverse, static_cast<float>(m.h), qmax, m)
                     : fit_candidate(x, n, static_cast<float>(s.b), inverse, 0.0f, qmax, m);
}

// Σ(x − decoded)² for codes decoded as the format does.
inline double decode_error(const float* x, const uint8_t* codes, int64_t n, float scale, float zero_point) {
  return Ops::decode_squared_error(x, codes, n, scale, zero_point);
}

// Stored parameters and codes for a fit: the codes are the nearest for what is stored.
inline GroupParams params_for_fit(const float* x, int64_t n, const ScaleOffset& fit, bool symmetric, int bits,
                                  float qmax, uint8_t* codes) {
  const float scale = static_cast<float>(fit.a);
  if (symmetric) {
    const float half = static_cast<float>(1 << (bits - 1));
    Ops::quantize_codes(x, n, 0.0f, scale, half, qmax, codes);
    return {scale, half, 0.0f, half, GroupParams::kFloat, 0};
  }
  const float offset = static_cast<float>(fit.b);
  Ops::quantize_codes(x, n, offset, scale, 0.0f, qmax, codes);
  const float zero_point = static_cast<float>(-static_cast<double>(offset) / static_cast<double>(scale));
  return {scale, zero_point, offset, 0.0f, GroupParams::kFloat, 0};
}

// Tries to beat the RTN encoding (rtn, rtn_codes) of one group; on success overwrites both.
inline void search_group(const float* x, int64_t n, float lo, float hi, int bits, bool symmetric, GroupParams* rtn,
                         uint8_t* rtn_codes) {
  alignas(64) uint8_t codes[kMaxGroupSize];
  const float qmax = static_cast<float>((1 << bits) - 1);
  GroupMoments m{static_cast<double>(n), 0.0, 0.0, symmetric ? static_cast<double>(1 << (bits - 1)) : 0.0, symmetric};
  {
    double sums[2];
    Ops::moments(x, n, sums);
    m.sum_x = sums[0];
    m.sum_xx = sums[1];
  }
  const double rtn_error = decode_error(x, rtn_codes, n, rtn->scale, rtn->zero_point);
  CandidateFit best;
  const auto consider = [&](const CandidateFit& fit) {
    if (fit.better_than(best)) best = fit;
  };
  const double range = static_cast<double>(hi) - static_cast<double>(lo);
  if (symmetric) {
    const double extreme = (__builtin_fabsf(hi) > __builtin_fabsf(lo)) ? hi : lo;
    for (float r : kSymmetricSteps) {
      consider(fit_candidate(x, n, 0.0f, static_cast<float>(-(m.h + r) / extreme), static_cast<float>(m.h), qmax, m));
    }
  } else {
    for (float r : kAnchoredSteps) {
      consider(fit_candidate(x, n, lo, static_cast<float>((qmax + r) / range), 0.0f, qmax, m));
    }
    const float centre = static_cast<float>(static_cast<double>(lo) + range / 2.0);
    for (float r : kCentredSteps) {
      consider(fit_candidate(x, n, centre, static_cast<float>((qmax + r) / range), qmax / 2.0f, qmax, m));
    }
  }
  if (!best.ok) return;
  ScaleOffset fit = solve(best, m);
  for (int i = 0; i < kRefinements; ++i) {
    const CandidateFit refined = refit(x, n, fit, qmax, m);
    if (!refined.better_than(best)) break;
    best = refined;
    fit = solve(best, m);
  }
  if (!(__builtin_isfinite(fit.a) && __builtin_isfinite(fit.b) && fit.a != 0.0)) return;
  const GroupParams found = params_for_fit(x, n, fit, symmetric, bits, qmax, codes);
  const double found_error = decode_error(x, codes, n, found.scale, found.zero_point);
  if (found_error < rtn_error * (1.0 - kSearchMargin)) {
    *rtn = found;
    memcpy(rtn_codes, codes, static_cast<size_t>(n));
  }
}

inline void quantize_codes_wide(const float* x, int64_t n, const GroupParams& p, double qmax,
                                uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) {
    double y = __builtin_roundeven((static_cast<double>(x[i]) - p.offset) / p.scale + p.bias);
    y = y < 0.0 ? 0.0 : (y > qmax ? qmax : y);
    codes[i] = static_cast<uint8_t>(y);
  }
}

inline int64_t first_non_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!__builtin_isfinite(x[i])) return i;
  }
  return 0;
}

// Codes are packed over the flattened tensor: element k sits at bits [(k % per_byte) * b, +b)
// of byte k * b / 8. A group whose first element is not at a byte boundary (rows whose length
// is not a multiple of 8 / b) shares its edge bytes with its neighbours: those are OR-ed in.
// per_byte is 1, 2 or 4, so / and % are shifts and masks (a 64-bit divide per group costs about
// as much as quantizing a small group).
inline int per_byte_shift(int bits) { return bits == 2 ? 2 : (bits == 4 ? 1 : 0); }

inline void write_codes(const uint8_t* codes, int64_t n, int bits, int64_t first, uint8_t* packed) {
  if (bits == 8) {
    memcpy(packed + first, codes, static_cast<size_t>(n));
    return;
  }
  const int shift = per_byte_shift(bits);
  const int64_t mask = (int64_t{1} << shift) - 1;
  int64_t i = 0;
  for (; i < n && ((first + i) & mask) != 0; ++i) {
    const int64_t k = first + i;
    packed[k >> shift] |= static_cast<uint8_t>(codes[i] << ((k & mask) * bits));
  }
  const int64_t bulk = ((n - i) >> shift) << shift;
  Ops::pack_codes(codes + i, bulk, bits, packed + ((first + i) >> shift));
  for (i += bulk; i < n; ++i) {
    const int64_t k = first + i;
    packed[k >> shift] |= static_cast<uint8_t>(codes[i] << ((k & mask) * bits));
  }
}

inline void read_codes(const uint8_t* packed, int64_t first, int64_t n, int bits, uint8_t* codes) {
  if (bits == 8) {
    memcpy(codes, packed + first, static_cast<size_t>(n));
    return;
  }
  const int shift = per_byte_shift(bits);
  const int64_t mask = (int64_t{1} << shift) - 1;
  const unsigned code_mask = (1u << bits) - 1u;
  int64_t i = 0;
  for (; i < n && ((first + i) & mask) != 0; ++i) {
    const int64_t k = first + i;
    codes[i] = static_cast<uint8_t>((packed[k >> shift] >> ((k & mask) * bits)) & code_mask);
  }
  const int64_t bulk = ((n - i) >> shift) << shift;
  Ops::unpack_codes(packed + ((first + i) >> shift), bulk, bits, codes + i);
  for (i += bulk; i < n; ++i) {
    const int64_t k = first + i;
    codes[i] = static_cast<uint8_t>((packed[k >> shift] >> ((k & mask) * bits)) & code_mask);
  }
}

// Running comparison of source and decoded values (see ErrorStats for the summation order).
struct ErrorAccumulator {
  // Float32 lanes are flushed into float64 at the first group boundary after this many elements.
  static constexpr int64_t kFlushElements = 1024;
  // Groups with |x| above this go straight to float64: 1,024 float32 squares of 1e17 stay finite.
  static constexpr float kFloat32SafeMagnitude = 1e17f;

  alignas(64) float lanes[4][16] = {};
  int64_t pending = 0;
  double totals[4] = {0.0, 0.0, 0.0, 0.0};  // xx, yy, xy, dd
  double max_abs_error = 0.0;
  int64_t count = 0;

  void flush() {
    for (int k = 0; k < 4; ++k) {
      for (int lane = 0; lane < 16; ++lane) {
        totals[k] += lanes[k][lane];
        lanes[k][lane] = 0.0f;
      }
    }
    pending = 0;
  }

  void add_group(const float* x, const float* decoded, int64_t n, float magnitude) {
    count += n;
    if (magnitude > kFloat32SafeMagnitude) {
      for (int64_t i = 0; i < n; ++i) {
        const double a = x[i], b = decoded[i], d = a - b;
        totals[0] += a * a;
        totals[1] += b * b;
        totals[2] += a * b;
        totals[3] += d * d;
        max_abs_error = __builtin_fabs(d) > max_abs_error ? __builtin_fabs(d) : max_abs_error;
      }
      return;
    }
    const double group_max = Ops::accumulate_error(x, decoded, n, lanes);
    max_abs_error = group_max > max_abs_error ? group_max : max_abs_error;
    pending += n;
    if (pending >= kFlushElements) flush();
  }

  // add_group for `groups` consecutive groups of n elements each (x and decoded contiguous): the
  // same additions in the same order, but the float32 groups between two flushes go through
  // accumulate_error in one call (the lanes continue from group to group either way, since n is a
  // multiple of 16).
  void add_groups(const float* x, const float* decoded, int groups, int64_t n, const float* magnitude) {
    int k = 0;
    while (k < groups) {
      if (magnitude[k] > kFloat32SafeMagnitude) {
        add_group(x + k * n, decoded + k * n, n, magnitude[k]);
        ++k;
        continue;
      }
      int end = k;
      int64_t after = pending;
      do {
        after += n;
        ++end;
      } while (end < groups && magnitude[end] <= kFloat32SafeMagnitude && after < kFlushElements);
      const int64_t span = (end - k) * n;
      count += span;
      const double span_max = Ops::accumulate_error(x + k * n, decoded + k * n, span, lanes);
      max_abs_error = span_max > max_abs_error ? span_max : max_abs_error;
      pending = after;
      if (pending >= kFlushElements) flush();
      k = end;
    }
  }

  ErrorStats finish() {
    flush();
    ErrorStats s;
    s.sum_xx = totals[0];
    s.sum_yy = totals[1];
    s.sum_xy = totals[2];
    s.sum_dd = totals[3];
    s.max_abs_error = max_abs_error;
    s.count = count;
    return s;
  }
};

// Walks groups in (row, group) order; the row advances by counting, not by a 64-bit division per
// group (which would cost about as much as quantizing a small group).
struct GroupCursor {
  const GroupGeometry& geo;
  int64_t groups_per_row, index, row, in_row;

  GroupCursor(const GroupGeometry& geometry, int64_t first_group)
      : geo(geometry), groups_per_row(geometry.groups_per_row()), index(first_group),
        row(first_group / groups_per_row), in_row(first_group - row * groups_per_row) {}
  void next() {
    ++index;
    if (++in_row == groups_per_row) {
      in_row = 0;
      ++row;
    }
  }
  int64_t size() const {
    const int64_t col = in_row * geo.group_size;
    return geo.cols - col < geo.group_size ? geo.cols - col : geo.group_size;
  }
  int64_t first_element() const { return row * geo.cols + in_row * geo.group_size; }
};

// Groups are handled in runs of up to 16 consecutive groups when every group of the tensor is
// whole (cols a multiple of group_size): the codes of a run are packed, and read back, in one
// call instead of one per group, and where the ISA can, the run's minima, maxima and parameters
// are computed together, so the fixed per-group cost shrinks. Each group's parameters, codes and
// error statistics are exactly those of the one-group loop.
inline constexpr int64_t kRunGroups = 16;
// ISAs whose Ops reduce the minima and maxima of 16 groups at once (Ops::min_max_16_groups).
template <typename O>
concept HasMinMax16Groups = requires(const float* x, float* v) { O::min_max_16_groups(x, int64_t{}, v, v); };

template <typename O>
inline bool min_max_16_groups(const float* x, int64_t group_size, float* lo, float* hi) {
  if constexpr (HasMinMax16Groups<O>) {
    return O::min_max_16_groups(x, group_size, lo, hi);
  } else {
    return false;
  }
}

inline int64_t run_length(const GroupGeometry& geo) {
  if (geo.cols % geo.group_size != 0) return 1;
  const int64_t fit = kMaxGroupSize / geo.group_size;  // the run's codes share one group-sized buffer
  return fit < kRunGroups ? fit : kRunGroups;
}

inline KernelStatus quantize_groups(const QuantizeJob& job, int64_t group_begin, int64_t group_end,
                                    ErrorStats* error_stats) {
  alignas(64) float widened[kMaxGroupSize];
  alignas(64) float decoded[kMaxGroupSize];
  alignas(64) uint8_t codes[kMaxGroupSize];
  ErrorAccumulator error;
  const GroupGeometry& geo = job.geometry;
  const float qmax = static_cast<float>((1 << job.bits) - 1);
  const int64_t per_run = run_length(geo);
  GroupCursor group(geo, group_begin);
  while (group.index < group_end) {
    // A run: groups [run_begin, run_end), contiguous in memory (one group unless run_length > 1).
    const int64_t run_begin = group.index;
    const int64_t run_end = run_begin + per_run < group_end ? run_begin + per_run : group_end;
    const int64_t run_first = group.first_element();
    // A run of 16 whole groups: the input widened at once, minima and maxima reduced together.
    const float* run_x = job.element_type == ElementType::kFloat32 ? static_cast<const float*>(job.weights) + run_first
                                                                   : nullptr;
    float run_lo[16], run_hi[16];
    bool have_min_max = false;
    if (HasMinMax16Groups<Ops> && run_end - run_begin == kRunGroups) {
      if (run_x == nullptr) {
        Ops::widen_to_f32(static_cast<const uint16_t*>(job.weights) + run_first, job.element_type,
                          16 * geo.group_size, widened);
        run_x = widened;
      }
      have_min_max = min_max_16_groups<Ops>(run_x, geo.group_size, run_lo, run_hi);
    }
    // The 16 groups' asymmetric scales and zero points, as asymmetric_group_params computes them,
    // in loops the compiler vectorises (the same IEEE operations on each lane, so the same values).
    float run_scale[16], run_zero_point[16];
    const bool have_params = have_min_max && !job.symmetric;
    if (have_params) {
      for (int k = 0; k < 16; ++k) {
        run_lo[k] += 0.0f;  // canonical zeros, as below
        run_hi[k] += 0.0f;
      }
      for (int k = 0; k < 16; ++k) run_scale[k] = asymmetric_scale(run_lo[k], run_hi[k], job.bits);
      for (int k = 0; k < 16; ++k) run_zero_point[k] = asymmetric_zero_point(run_lo[k], run_scale[k]);
      // RTN where every group is an ordinary one (no constant group, no range past float): the
      // codes of the 16 groups straight after one another, without the general loop's per-group
      // decisions; the same operations as that loop.
      bool ordinary = job.method == Method::kRtn;
      for (int k = 0; k < 16; ++k) {
        ordinary &= run_scale[k] != 0.0f && !__builtin_isinf(run_hi[k] - run_lo[k]);
      }
      if (ordinary) {
        const int64_t n = geo.group_size;
        for (int k = 0; k < 16; ++k) Ops::quantize_codes(run_x + k * n, n, run_lo[k], run_scale[k], 0.0f, qmax, codes + k * n);
        memcpy(job.scales + run_begin, run_scale, sizeof run_scale);
        memcpy(job.zero_points + run_begin, run_zero_point, sizeof run_zero_point);
        if (error_stats != nullptr) {
          float magnitude[16];
          for (int k = 0; k < 16; ++k) {
            Ops::dequantize_codes(codes + k * n, n, run_scale[k], run_zero_point[k], decoded + k * n);
            magnitude[k] = __builtin_fabsf(run_lo[k]) > __builtin_fabsf(run_hi[k]) ? __builtin_fabsf(run_lo[k])
                                                                                   : __builtin_fabsf(run_hi[k]);
          }
          error.add_groups(run_x, decoded, 16, n, magnitude);
        }
        write_codes(codes, 16 * n, job.bits, run_first, job.packed);
        for (int k = 0; k < 16; ++k) group.next();
        continue;
      }
    }
    int64_t run_n = 0;
    for (; group.index < run_end; group.next()) {
      const int64_t g = group.index, n = group.size(), first = group.first_element();
      uint8_t* group_codes = codes + run_n;
      const float* x;
      if (run_x != nullptr) {
        x = run_x + run_n;
      } else {
        Ops::widen_to_f32(static_cast<const uint16_t*>(job.weights) + first, job.element_type, n, widened + run_n);
        x = widened + run_n;
      }
      float lo, hi;
      if (have_min_max) {
        lo = run_lo[g - run_begin];
        hi = run_hi[g - run_begin];
      } else if (!Ops::min_max(x, n, &lo, &hi)) {
        return {false, first + first_non_finite(x, n)};
      }
      // Vector min/max may return either zero for {-0, +0}; adding +0 makes the result canonical.
      lo += 0.0f;
      hi += 0.0f;

      GroupParams p = have_params ? asymmetric_group_params(lo, hi, run_scale[g - run_begin], run_zero_point[g - run_begin])
                      : job.symmetric ? symmetric_group_params(lo, hi, job.bits)
                                      : asymmetric_group_params(lo, hi, job.bits);
      switch (p.kind) {
        case GroupParams::kFill: memset(group_codes, p.fill_code, static_cast<size_t>(n)); break;
        case GroupParams::kFloat: Ops::quantize_codes(x, n, p.offset, p.scale, p.bias, qmax, group_codes); break;
        case GroupParams::kWide: quantize_codes_wide(x, n, p, qmax, group_codes); break;
      }
      if (job.method == Method::kSearch && p.kind == GroupParams::kFloat) {
        search_group(x, n, lo, hi, job.bits, job.symmetric, &p, group_codes);
      }
      job.scales[g] = p.scale;
      job.zero_points[g] = p.zero_point;
      if (error_stats != nullptr) {
        Ops::dequantize_codes(group_codes, n, p.scale, p.zero_point, decoded);
        error.add_group(x, decoded, n, __builtin_fabsf(lo) > __builtin_fabsf(hi) ? __builtin_fabsf(lo) : __builtin_fabsf(hi));
      }
      run_n += n;
    }
    write_codes(codes, run_n, job.bits, run_first, job.packed);
  }
  if (error_stats != nullptr) *error_stats = error.finish();
  return {};
}

inline void dequantize_groups(const DequantizeJob& job, int64_t group_begin, int64_t group_end) {
  alignas(64) uint8_t codes[kMaxGroupSize];
  const GroupGeometry& geo = job.geometry;
  const int64_t per_run = run_length(geo);
  GroupCursor group(geo, group_begin);
  while (group.index < group_end) {
    const int64_t run_end = group.index + per_run < group_end ? group.index + per_run : group_end;
    read_codes(job.packed, group.first_element(),
               per_run == 1 ? group.size() : (run_end - group.index) * geo.group_size, job.bits, codes);
    int64_t run_n = 0;
    for (; group.index < run_end; group.next()) {
      const int64_t g = group.index, n = group.size(), first = group.first_element();
      Ops::dequantize_codes(codes + run_n, n, job.scales[g], job.zero_points[g], job.weights + first);
      run_n += n;
    }
  }
}

// ErrorStats of n finite values x against their decoded values y, summed as quantize_groups sums
// a row of 256-element groups: the same additions on every ISA.
inline ErrorStats compare_values(const float* x, const float* y, int64_t n) {
  constexpr int64_t kBlock = 256;
  ErrorAccumulator accumulator;
  for (int64_t i = 0; i < n; i += kBlock) {
    const int64_t m = n - i < kBlock ? n - i : kBlock;
    float lo = 0.0f, hi = 0.0f;
    Ops::min_max(x + i, m, &lo, &hi);
    accumulator.add_group(x + i, y + i, m, -lo > hi ? -lo : hi);
  }
  return accumulator.finish();
}

inline const KernelTable& make_table(const char* name) {
  static const KernelTable table = {name,           &quantize_groups, &dequantize_groups, &compare_values,
                                    &Ops::min_max, &Ops::pack_codes, &Ops::unpack_codes};
  return table;
}
