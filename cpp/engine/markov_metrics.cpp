#include "engine/markov_metrics.h"

#include <cmath>

namespace arrowquant::engine {

MarkovSummary markov_metrics(const float* scales, const float* zero_points, const kernels::GroupGeometry& geometry,
                             int bits, double threshold) {
  MarkovSummary m;
  const int64_t groups_per_row = geometry.groups_per_row();
  const double levels = static_cast<double>((1 << bits) - 1);
  for (int64_t row = 0; row < geometry.rows; ++row) {
    const float* s = scales + row * groups_per_row;
    const float* z = zero_points + row * groups_per_row;
    for (int64_t g = 0; g + 1 < groups_per_row; ++g) {
      const double from = std::fabs(static_cast<double>(s[g]));
      const double delta = std::fabs(static_cast<double>(s[g + 1]) - static_cast<double>(s[g]));
      const double scale_jump = from > 0.0 ? delta / from : (delta > 0.0 ? 1.0 : 0.0);
      const double zero_point_jump = std::fabs(static_cast<double>(z[g + 1]) - static_cast<double>(z[g])) / levels;
      const double jump = scale_jump + zero_point_jump;
      ++m.boundaries;
      m.jump_sum += jump;
      m.boundary_score_sum += 1.0 - std::fmin(1.0, jump / 2.0);
      m.max_scale_jump = std::fmax(m.max_scale_jump, scale_jump);
      if (scale_jump > threshold) {
        const bool high = scale_jump > kHighSeverityJump;
        (high ? m.high : m.medium) += 1;
        if (m.first_violations.size() < kMaxReportedViolations) m.first_violations.push_back({row, g, scale_jump, high});
      }
    }
  }
  return m;
}

}  // namespace arrowquant::engine
