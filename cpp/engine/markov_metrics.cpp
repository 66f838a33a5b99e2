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

MarkovSummary markov_metrics(const float* scales, const float* zero_points, const kernels::GroupGeometry& geometry,
                             int bits, double threshold, int64_t group_begin, int64_t group_end) {
  MarkovSummary m;
  const int64_t groups_per_row = geometry.groups_per_row();
  if (group_end < 0) group_end = geometry.num_groups();
  const double levels = static_cast<double>((1 << bits) - 1);
  // Row and column advance with g (no division per boundary: this runs once per group).
  int64_t row = group_begin / groups_per_row, col = group_begin - row * groups_per_row;
  for (int64_t g = group_begin; g < group_end; ++g, ++col) {
    if (col == groups_per_row) {
      col = 0;
      ++row;
    }
    if (col + 1 >= groups_per_row) continue;  // the last group of a row has no right neighbour
    const double from = std::fabs(static_cast<double>(scales[g]));
    const double delta = std::fabs(static_cast<double>(scales[g + 1]) - static_cast<double>(scales[g]));
    const double scale_jump = from > 0.0 ? delta / from : (delta > 0.0 ? 1.0 : 0.0);
    const double zero_point_jump = std::fabs(static_cast<double>(zero_points[g + 1]) - static_cast<double>(zero_points[g])) / levels;
    const double jump = scale_jump + zero_point_jump;
    ++m.boundaries;
    m.jump_sum += jump;
    // Plain comparisons, not fmin/fmax: no NaN can occur here and the libm calls are not inlined.
    m.boundary_score_sum += 1.0 - (jump < 2.0 ? jump / 2.0 : 1.0);
    m.max_scale_jump = scale_jump > m.max_scale_jump ? scale_jump : m.max_scale_jump;
    if (scale_jump > threshold) {
      const bool high = scale_jump > kHighSeverityJump;
      (high ? m.high : m.medium) += 1;
      if (m.first_violations.size() < kMaxReportedViolations) m.first_violations.push_back({row, col, scale_jump, high});
    }
  }
  return m;
}

}  // namespace arrowquant::engine
