#include "engine/markov_metrics.h"

#include <cmath>

namespace arrowquant::engine {

void MarkovSummary::merge(const MarkovSummary& later) {
  boundaries += later.boundaries;
  jump_sum += later.jump_sum;
  boundary_score_sum += later.boundary_score_sum;
  max_scale_jump = std::fmax(max_scale_jump, later.max_scale_jump);
  high += later.high;
  medium += later.medium;
  for (const auto& v : later.first_violations) {
    if (first_violations.size() >= kMaxReportedViolations) break;
    first_violations.push_back(v);
  }
}

namespace {

struct BoundaryJumps {
  double scale_jump, jump;
};

// inverse_levels = 1 / (2^b − 1): one division per boundary rather than two (a division is the
// slowest step here).
inline BoundaryJumps boundary(const float* scales, const float* zero_points, int64_t g, double inverse_levels) {
  const double from = std::fabs(static_cast<double>(scales[g]));
  const double delta = std::fabs(static_cast<double>(scales[g + 1]) - static_cast<double>(scales[g]));
  const double scale_jump = from > 0.0 ? delta / from : (delta > 0.0 ? 1.0 : 0.0);
  const double zero_point_jump =
      std::fabs(static_cast<double>(zero_points[g + 1]) - static_cast<double>(zero_points[g])) * inverse_levels;
  return {scale_jump, scale_jump + zero_point_jump};
}

}  // namespace

MarkovSummary markov_metrics(const float* scales, const float* zero_points, const kernels::GroupGeometry& geometry,
                             int bits, double threshold, int64_t group_begin, int64_t group_end) {
  MarkovSummary m;
  const int64_t groups_per_row = geometry.groups_per_row();
  if (group_end < 0) group_end = geometry.num_groups();
  const double inverse_levels = 1.0 / static_cast<double>((1 << bits) - 1);
  // Row by row: the boundaries of a row are (g, g + 1) for g below the row's last group. The sums
  // and counts go into four interleaved partials (added in a fixed order at the end of each row),
  // without branches, so the loop has no serial chain of additions; while fewer than
  // kMaxReportedViolations are recorded, a row with a violation is walked again in order to record
  // them. (Small groups make this loop run once per few dozen weights: it must cost little next to
  // quantizing them.)
  int64_t row = group_begin / groups_per_row;
  for (int64_t g = group_begin; g < group_end; ++row) {
    const int64_t row_last = (row + 1) * groups_per_row - 1;  // no right neighbour
    const int64_t end = row_last < group_end ? row_last : group_end;
    double jump_sum[4] = {0, 0, 0, 0}, score_sum[4] = {0, 0, 0, 0}, max_jump[4] = {0, 0, 0, 0};
    int64_t over[4] = {0, 0, 0, 0}, high[4] = {0, 0, 0, 0};
    const auto add = [&](int k, int64_t at) {
      const BoundaryJumps b = boundary(scales, zero_points, at, inverse_levels);
      jump_sum[k] += b.jump;
      // Plain comparisons, not fmin/fmax: no NaN can occur here and the libm calls are not inlined.
      score_sum[k] += 1.0 - (b.jump < 2.0 ? b.jump / 2.0 : 1.0);
      max_jump[k] = b.scale_jump > max_jump[k] ? b.scale_jump : max_jump[k];
      over[k] += b.scale_jump > threshold;
      high[k] += b.scale_jump > threshold && b.scale_jump > kHighSeverityJump;
    };
    int64_t i = g;
    for (; i + 4 <= end; i += 4) {
      for (int k = 0; k < 4; ++k) add(k, i + k);
    }
    for (; i < end; ++i) add(0, i);
    if (end > g) {
      m.boundaries += end - g;
      m.jump_sum += (jump_sum[0] + jump_sum[1]) + (jump_sum[2] + jump_sum[3]);
      m.boundary_score_sum += (score_sum[0] + score_sum[1]) + (score_sum[2] + score_sum[3]);
      for (double v : max_jump) m.max_scale_jump = v > m.max_scale_jump ? v : m.max_scale_jump;
    }
    const int64_t row_over = (over[0] + over[1]) + (over[2] + over[3]);
    const int64_t row_high = (high[0] + high[1]) + (high[2] + high[3]);
    m.high += row_high;
    m.medium += row_over - row_high;
    for (int64_t j = g; row_over > 0 && j < end && m.first_violations.size() < kMaxReportedViolations; ++j) {
      const double scale_jump = boundary(scales, zero_points, j, inverse_levels).scale_jump;
      if (scale_jump > threshold) {
        m.first_violations.push_back({row, j - row * groups_per_row, scale_jump, scale_jump > kHighSeverityJump});
      }
    }
    g = row_last + 1;
  }
  return m;
}

}  // namespace arrowquant::engine
