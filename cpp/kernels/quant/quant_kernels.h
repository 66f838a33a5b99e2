// Quantization kernels: group-wise round-to-nearest (RTN) quantize / dequantize of one tensor.
//
// Pure functions over pointers and lengths: no Python, no Arrow, no allocation, no exceptions.
// The format they implement is docs/format.md; every ISA's table produces the same bytes as
// the scalar one for every input.
#pragma once

#include <cstdint>

namespace arrowquant::kernels {

enum class ElementType : uint8_t { kFloat32, kFloat16, kBFloat16 };

inline constexpr int32_t kMinGroupSize = 16;
inline constexpr int32_t kMaxGroupSize = 4096;

// The tensor viewed as rows x cols (rows = shape[0] for ndim >= 2, else 1); each row is cut
// into groups of group_size consecutive elements, the last one possibly shorter.
struct GroupGeometry {
  int64_t rows = 0;
  int64_t cols = 0;
  int32_t group_size = 0;

  int64_t groups_per_row() const { return (cols + group_size - 1) / group_size; }
  int64_t num_groups() const { return rows * groups_per_row(); }
  int64_t numel() const { return rows * cols; }
};

// How group parameters are chosen; the format (and decoding) is the same for both.
enum class Method : uint8_t {
  kRtn,     // min/max (docs/format.md "Encoding")
  kSearch,  // least-squares fit over candidate scales; never worse than kRtn for any group
};

struct QuantizeJob {
  const void* weights = nullptr;  // numel elements of element_type, row-major
  ElementType element_type = ElementType::kFloat32;
  GroupGeometry geometry;
  int bits = 4;  // 2, 4 or 8
  bool symmetric = false;
  Method method = Method::kRtn;
  uint8_t* packed = nullptr;  // ceil(numel * bits / 8) bytes; zeroed by the caller if packed_needs_zeroing()
  float* scales = nullptr;       // num_groups() values
  float* zero_points = nullptr;  // num_groups() values
};

// Whether quantize_groups ORs codes into bytes it shares with a neighbouring group (and so needs a
// zeroed output). Only when a row's codes do not end on a byte boundary: group starts inside a
// row are multiples of 16 elements, so otherwise every byte is written whole.
inline bool packed_needs_zeroing(const GroupGeometry& geometry, int bits) { return (geometry.cols * bits) % 8 != 0; }

struct DequantizeJob {
  const uint8_t* packed = nullptr;
  const float* scales = nullptr;
  const float* zero_points = nullptr;
  GroupGeometry geometry;
  int bits = 4;
  float* weights = nullptr;  // numel() floats
};

// Sums over (original x, decoded y) pairs, for cosine similarity and RMSE. Within a group, element
// i goes to float32 lane i % 16; once 1,024 or more elements have gone into the lanes (at a group
// boundary) the 16 lanes are added in order into float64 totals. Every ISA follows exactly that
// order, so all get the same result.
struct ErrorStats {
  double sum_xx = 0.0;  // sum of x^2
  double sum_yy = 0.0;  // sum of y^2
  double sum_xy = 0.0;  // sum of x*y
  double sum_dd = 0.0;  // sum of (x - y)^2
  double max_abs_error = 0.0;
  int64_t count = 0;

  void merge(const ErrorStats& o) {
    sum_xx += o.sum_xx;
    sum_yy += o.sum_yy;
    sum_xy += o.sum_xy;
    sum_dd += o.sum_dd;
    max_abs_error = o.max_abs_error > max_abs_error ? o.max_abs_error : max_abs_error;
    count += o.count;
  }
};

// ok == false means a NaN or +-Inf was found; bad_index is its flattened element index
// (the first one within the groups that were asked for).
struct KernelStatus {
  bool ok = true;
  int64_t bad_index = -1;
};

// One ISA's implementation. All functions are safe to call concurrently on disjoint outputs.
struct KernelTable {
  const char* name;
  // Quantizes groups [group_begin, group_end) in (row, group) order. Writes the packed codes of
  // exactly those groups' elements (bytes shared with neighbouring groups are OR-ed into, so the
  // output must start zeroed when packed_needs_zeroing(), and two callers must not share a byte:
  // split where the first element index is a multiple of 4), and scales/zero_points[group_begin,
  // group_end).
  // If error_stats is not null it receives the comparison of the source with its decoded
  // values, computed while each group is still in registers and cache.
  KernelStatus (*quantize_groups)(const QuantizeJob& job, int64_t group_begin, int64_t group_end,
                                  ErrorStats* error_stats);
  // Decodes groups [group_begin, group_end) into job.weights: x = (q - zero_point) * scale.
  void (*dequantize_groups)(const DequantizeJob& job, int64_t group_begin, int64_t group_end);

  // Compares n finite source values with their decoded values (encoders that are not group
  // kernels, such as the kquant scheme's, report their error through this), in 256-element
  // blocks summed exactly as quantize_groups sums its groups.
  ErrorStats (*compare_values)(const float* x, const float* y, int64_t n);

  // Building blocks, exposed for tests and microbenchmarks.
  // min/max of n >= 1 floats; returns false if any is NaN or +-Inf (min/max then undefined).
  bool (*min_max)(const float* values, int64_t n, float* min_out, float* max_out);
  // Packs n codes (n a multiple of 8 / bits) into n * bits / 8 bytes, LSB first.
  void (*pack_codes)(const uint8_t* codes, int64_t n, int bits, uint8_t* packed);
  // Inverse of pack_codes.
  void (*unpack_codes)(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);
};

enum class Isa : uint8_t { kScalar, kAvx2, kAvx512 };

const char* isa_name(Isa isa);
// The table for an ISA, or nullptr if this build lacks it or this CPU cannot run it.
const KernelTable* kernels_for(Isa isa);
// The widest ISA this CPU runs.
Isa best_isa();

// Per-ISA tables (defined in quant_<isa>.cpp). Only call the ones the CPU supports.
const KernelTable& scalar_kernel_table();
const KernelTable& avx2_kernel_table();
const KernelTable& avx512_kernel_table();

}  // namespace arrowquant::kernels
