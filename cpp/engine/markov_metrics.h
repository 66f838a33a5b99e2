// Smoothness of the quantization parameters between neighbouring groups along each row
// (the "Markov" metrics of docs/markov.md). Reads only scales and zero points: it runs right after
// a tensor is quantized, never over the weights again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/quant/quant_kernels.h"

namespace arrowquant::engine {

inline constexpr double kDefaultMarkovThreshold = 0.3;
inline constexpr double kHighSeverityJump = 0.5;
inline constexpr size_t kMaxReportedViolations = 100;

struct MarkovViolation {
  int64_t row;
  int64_t group;  // the boundary between group and group + 1 of this row
  double scale_jump;
  bool high;  // scale_jump > 0.5 ("high"), else "medium"
};

struct MarkovSummary {
  int64_t boundaries = 0;           // neighbouring group pairs within rows
  double jump_sum = 0.0;            // Σ (scale_jump + zero_point_jump)
  double boundary_score_sum = 0.0;  // Σ 1 − min(1, (scale_jump + zero_point_jump) / 2)
  double max_scale_jump = 0.0;
  int64_t high = 0, medium = 0;     // violations by severity
  std::vector<MarkovViolation> first_violations;  // at most kMaxReportedViolations, in order

  // Appends the summary of the boundaries that follow this one's (sums in call order).
  void merge(const MarkovSummary& later);
};

// For groups i, i+1 of one row: scale_jump = |s(i+1) − s(i)| / |s(i)| (0 when both are 0, 1 when
// only s(i) is), zero_point_jump = |z(i+1) − z(i)| / (2^b − 1). A violation is a scale jump above
// `threshold`.
// Covers the boundaries (g, g + 1) within a row for g in [group_begin, group_end); the whole
// tensor by default. Reads scales[group_end] when that group is in the same row.
MarkovSummary markov_metrics(const float* scales, const float* zero_points, const kernels::GroupGeometry& geometry,
                             int bits, double threshold, int64_t group_begin = 0, int64_t group_end = -1);

}  // namespace arrowquant::engine
