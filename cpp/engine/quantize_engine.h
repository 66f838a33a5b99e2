// Runs the quantization kernels over many tensors at once: splits the work into tasks (whole
// small tensors, or chunks of groups of a large one) and spreads them over the thread pool.
// No Arrow, no Python: callers own every buffer. The result never depends on the thread count.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/markov_metrics.h"
#include "kernels/quant/quant_kernels.h"

namespace arrowquant::engine {

// Geometry of a tensor of the given shape (see docs/format.md): rows = shape[0] when ndim >= 2,
// else 1; cols = the product of the other dimensions.
kernels::GroupGeometry geometry_for_shape(std::span<const int64_t> shape, int32_t group_size);

// ceil(numel * bits / 8).
int64_t packed_bytes(int64_t numel, int bits);

struct NonFiniteValue {
  int64_t tensor_index;   // index into the jobs span
  int64_t element_index;  // flattened index of the first NaN / Inf in that tensor
};

// Quantizes every job (packed outputs zeroed by the caller where kernels::packed_needs_zeroing). On a NaN / Inf returns where the
// first one is (lowest tensor, then lowest index); outputs are then unspecified. If error_stats
// is given it receives, per job, the comparison of the source with its decoded values (computed
// while the group is still in cache; identical for any thread count).
// If markov is given it receives, per job, the parameter-smoothness metrics (markov_metrics.h),
// computed by the same threads right after the groups are quantized.
std::optional<NonFiniteValue> quantize_tensors(std::span<const kernels::QuantizeJob> jobs, int num_threads,
                                               std::vector<kernels::ErrorStats>* error_stats = nullptr,
                                               std::vector<MarkovSummary>* markov = nullptr,
                                               double markov_threshold = kDefaultMarkovThreshold);

// Product of the dimensions, or nullopt if one is negative or the product overflows 64 bits.
std::optional<int64_t> element_count(std::span<const int64_t> shape);

// "[2, 3, 4]", for messages.
std::string shape_text(std::span<const int64_t> shape);

// Everything a decoder checks before reading a stored tensor: the bit width, the group size, a
// shape whose product fits in 64 bits, and every length against what shape, bits and group size
// imply. On success fills job->geometry and job->bits and returns an empty string; otherwise
// returns a message (without the layer's name) saying what was expected and what was found.
std::string check_quantized_tensor(std::span<const int64_t> shape, int64_t bits, int64_t group_size,
                                   int64_t packed_len, int64_t scales_len, int64_t zero_points_len,
                                   kernels::DequantizeJob* job);

void dequantize_tensors(std::span<const kernels::DequantizeJob> jobs, int num_threads);

// Wall-clock seconds the most recent quantize_tensors / dequantize_tensors call (from any thread)
// spent running kernels: lets benchmarks separate kernel time from binding and Arrow overhead.
double last_kernel_seconds();

}  // namespace arrowquant::engine
