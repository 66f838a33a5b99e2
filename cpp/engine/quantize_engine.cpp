#include "engine/quantize_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>

#include "engine/kernel_selection.h"
#include "engine/thread_pool.h"

namespace arrowquant::engine {

namespace {

// About 256 KB of float32 per task: big enough to hide scheduling cost, small enough to balance.
constexpr int64_t kElementsPerTask = 64 * 1024;
// Below this much work in one call, waking other threads costs more than it saves.
constexpr int64_t kMinElementsForThreads = 128 * 1024;

std::atomic<int64_t> g_last_kernel_nanoseconds{0};

// Records the wall time of one parallel run of kernels.
class KernelTimer {
 public:
  KernelTimer() : start_(std::chrono::steady_clock::now()) {}
  ~KernelTimer() {
    g_last_kernel_nanoseconds.store(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count());
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

struct Task {
  int64_t job;
  int64_t group_begin;
  int64_t group_end;
};

// Tasks must not share an output byte: a task boundary goes where the first element index is a
// multiple of 4 (the most 2-bit codes one byte holds). Group starts inside a row are multiples
// of the group size (>= 16); row starts are aligned when cols is a multiple of 4, and otherwise
// every 4th row start is.
std::vector<Task> plan_tasks(const kernels::GroupGeometry* geometries, size_t count, int64_t* total_elements) {
  std::vector<Task> tasks;
  *total_elements = 0;
  for (size_t j = 0; j < count; ++j) {
    const kernels::GroupGeometry& geo = geometries[j];
    const int64_t groups = geo.num_groups();
    if (groups == 0) continue;
    *total_elements += geo.numel();
    const int64_t unit = geo.cols % 4 == 0 ? 1 : 4 * geo.groups_per_row();
    const int64_t groups_per_task =
        std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(1, int64_t{geo.group_size} * unit)) * unit;
    for (int64_t g = 0; g < groups; g += groups_per_task) {
      tasks.push_back({static_cast<int64_t>(j), g, std::min(groups, g + groups_per_task)});
    }
  }
  return tasks;
}

// The task plan of any job type that has a .geometry.
template <typename Job>
std::vector<Task> plan_jobs(std::span<const Job> jobs, int64_t* total_elements) {
  std::vector<kernels::GroupGeometry> geometries;
  geometries.reserve(jobs.size());
  for (const auto& job : jobs) geometries.push_back(job.geometry);
  return plan_tasks(geometries.data(), geometries.size(), total_elements);
}

int effective_threads(int requested, int64_t total_elements) {
  if (total_elements < kMinElementsForThreads) return 1;
  return requested <= 0 ? hardware_threads() : requested;
}

}  // namespace

double last_kernel_seconds() { return static_cast<double>(g_last_kernel_nanoseconds.load()) * 1e-9; }

kernels::GroupGeometry geometry_for_shape(std::span<const int64_t> shape, int32_t group_size) {
  kernels::GroupGeometry geo;
  geo.group_size = group_size;
  if (shape.size() >= 2) {
    geo.rows = shape[0];
    geo.cols = 1;
    for (size_t i = 1; i < shape.size(); ++i) geo.cols *= shape[i];
  } else {
    geo.rows = 1;
    geo.cols = shape.empty() ? 1 : shape[0];
  }
  return geo;
}

std::optional<int64_t> element_count(std::span<const int64_t> shape) {
  // The product of the non-zero dimensions must fit too, not only the (possibly zero) element
  // count: geometry_for_shape multiplies the trailing dimensions in order, so [0, 2^40, 2^40]
  // would overflow there, and NumPy refuses such shapes as well.
  int64_t nonzero = 1;
  bool has_zero = false;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d == 0) {
      has_zero = true;
      continue;
    }
    if (nonzero > std::numeric_limits<int64_t>::max() / d) return std::nullopt;
    nonzero *= d;
  }
  return has_zero ? 0 : nonzero;
}

std::string shape_text(std::span<const int64_t> shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string check_quantized_tensor(std::span<const int64_t> shape, int64_t bits, int64_t group_size,
                                   int64_t packed_len, int64_t scales_len, int64_t zero_points_len,
                                   kernels::DequantizeJob* job) {
  if (bits != 2 && bits != 4 && bits != 8) return "bit_width must be 2, 4 or 8; found " + std::to_string(bits);
  if (group_size < kernels::kMinGroupSize || group_size > kernels::kMaxGroupSize || (group_size & (group_size - 1)) != 0) {
    return "group_size must be a power of two from 16 to 4096; found " + std::to_string(group_size);
  }
  const std::optional<int64_t> numel = element_count(shape);
  if (!numel) return "shape " + shape_text(shape) + " has a negative dimension or more elements than fit in 64 bits";
  const kernels::GroupGeometry geometry = geometry_for_shape(shape, static_cast<int32_t>(group_size));
  const int64_t expected_bytes = packed_bytes(*numel, static_cast<int>(bits));
  if (packed_len != expected_bytes) {
    return "'quantized_data' has " + std::to_string(packed_len) + " bytes but shape " + shape_text(shape) + " at " +
           std::to_string(bits) + " bits needs " + std::to_string(expected_bytes);
  }
  const int64_t groups = geometry.num_groups();
  if (scales_len != groups || zero_points_len != groups) {
    return "shape " + shape_text(shape) + " with group_size " + std::to_string(group_size) + " has " +
           std::to_string(groups) + " groups but 'scales' has " + std::to_string(scales_len) + " and 'zero_points' has " +
           std::to_string(zero_points_len) + " values";
  }
  job->geometry = geometry;
  job->bits = static_cast<int>(bits);
  return {};
}

int64_t packed_bytes(int64_t numel, int bits) { return (numel / 8) * bits + ((numel % 8) * bits + 7) / 8; }

std::optional<NonFiniteValue> quantize_tensors(std::span<const kernels::QuantizeJob> jobs, int num_threads,
                                               std::vector<kernels::ErrorStats>* error_stats,
                                               std::vector<MarkovSummary>* markov, double markov_threshold) {
  int64_t total = 0;
  const std::vector<Task> tasks = plan_jobs(jobs, &total);

  const kernels::KernelTable& table = active_kernels();
  std::vector<kernels::KernelStatus> status(tasks.size());
  std::vector<kernels::ErrorStats> task_stats(error_stats != nullptr ? tasks.size() : 0);
  std::optional<KernelTimer> timer(std::in_place);
  parallel_for(static_cast<int64_t>(tasks.size()), effective_threads(num_threads, total), [&](int64_t t) {
    const Task& task = tasks[static_cast<size_t>(t)];
    const kernels::QuantizeJob& job = jobs[static_cast<size_t>(task.job)];
    status[static_cast<size_t>(t)] = table.quantize_groups(job, task.group_begin, task.group_end,
                                                           error_stats != nullptr ? &task_stats[static_cast<size_t>(t)] : nullptr);
  });
  // Tasks are in (tensor, group) order, so the first failed task holds the first bad value.
  for (size_t t = 0; t < tasks.size(); ++t) {
    if (!status[t].ok) return NonFiniteValue{tasks[t].job, status[t].bad_index};
  }
  if (markov != nullptr) {
    // A second parallel pass over the same tasks, once every scale is written (a task's last
    // boundary reads the next task's first group); merged in task order, so thread-independent.
    std::vector<MarkovSummary> task_markov(tasks.size());
    parallel_for(static_cast<int64_t>(tasks.size()), effective_threads(num_threads, total), [&](int64_t t) {
      const Task& task = tasks[static_cast<size_t>(t)];
      const kernels::QuantizeJob& job = jobs[static_cast<size_t>(task.job)];
      task_markov[static_cast<size_t>(t)] = markov_metrics(job.scales, job.zero_points, job.geometry, job.bits,
                                                           markov_threshold, task.group_begin, task.group_end);
    });
    markov->assign(jobs.size(), MarkovSummary{});
    for (size_t t = 0; t < tasks.size(); ++t) (*markov)[static_cast<size_t>(tasks[t].job)].merge(task_markov[t]);
  }
  timer.reset();
  if (error_stats != nullptr) {
    error_stats->assign(jobs.size(), kernels::ErrorStats{});
    for (size_t t = 0; t < tasks.size(); ++t) (*error_stats)[static_cast<size_t>(tasks[t].job)].merge(task_stats[t]);
  }
  return std::nullopt;
}

void dequantize_tensors(std::span<const kernels::DequantizeJob> jobs, int num_threads) {
  int64_t total = 0;
  const std::vector<Task> tasks = plan_jobs(jobs, &total);

  const kernels::KernelTable& table = active_kernels();
  const KernelTimer timer;
  parallel_for(static_cast<int64_t>(tasks.size()), effective_threads(num_threads, total), [&](int64_t t) {
    const Task& task = tasks[static_cast<size_t>(t)];
    table.dequantize_groups(jobs[static_cast<size_t>(task.job)], task.group_begin, task.group_end);
  });
}

}  // namespace arrowquant::engine
