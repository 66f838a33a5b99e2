// arrowquant._core: argument conversion, GIL release and the one place where C++ errors become
// Python exceptions. No logic of its own.
#include <dlfcn.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <cstring>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrow_glue/c_bridge.h"
#include "arrow_glue/errors.h"
#include "arrow_glue/quantize_arrow.h"
#include "engine/gguf_engine.h"
#include "engine/kquant_engine.h"
#include "engine/kernel_selection.h"
#include "engine/markov_metrics.h"
#include "engine/quantize_engine.h"
#include "engine/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace nb = nanobind;
using arrowquant::arrow_glue::CDataAddresses;

namespace {

// The GIL released around kernel work, and taken back safely at interpreter exit.
//
// A daemon thread still inside a kernel when the interpreter finalizes would, on taking the GIL
// back, be ended by CPython (< 3.14) with pthread_exit. Its forced unwinding through this
// destructor (implicitly noexcept) and nanobind's catch (...) frames calls std::terminate: the
// host process aborts. So once the interpreter is exiting, such a thread is parked for good
// instead (it could never run Python again anyway), as CPython 3.14 itself does. "Exiting" is
// flagged by an atexit callback, which runs after non-daemon threads are joined and before
// finalization starts; the thread that runs it (and later atexit callbacks that quantize) is
// never parked. docs/reliability.md describes the remaining window.
std::atomic<bool> g_interpreter_exiting{false};
std::atomic<std::thread::id> g_exiting_thread{};

#if defined(Py_LIMITED_API) && Py_LIMITED_API < 0x030D0000
// The abi3 build (limited API of 3.12) may not name _Py_IsFinalizing, and Py_IsFinalizing only
// exists from 3.13 on: look up whichever the running interpreter exports, once.
using IsFinalizingFn = int (*)();
IsFinalizingFn find_is_finalizing() {
  if (void* f = dlsym(RTLD_DEFAULT, "Py_IsFinalizing")) return reinterpret_cast<IsFinalizingFn>(f);
  return reinterpret_cast<IsFinalizingFn>(dlsym(RTLD_DEFAULT, "_Py_IsFinalizing"));
}
#endif

bool interpreter_finalizing() {
#if defined(Py_LIMITED_API) && Py_LIMITED_API < 0x030D0000
  static const IsFinalizingFn is_finalizing = find_is_finalizing();
  return is_finalizing != nullptr && is_finalizing() != 0;
#elif PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

class ReleasedGil {
 public:
  ReleasedGil() : state_(PyEval_SaveThread()) {}
  ReleasedGil(const ReleasedGil&) = delete;
  ReleasedGil& operator=(const ReleasedGil&) = delete;
  ~ReleasedGil() {
    const bool exiting = g_interpreter_exiting.load() && g_exiting_thread.load() != std::this_thread::get_id();
    if (exiting || interpreter_finalizing()) {
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
    PyEval_RestoreThread(state_);
  }

 private:
  PyThreadState* state_;
};

[[noreturn]] void raise_error(const char* class_name, const std::string& message) {
  nb::object errors = nb::module_::import_("arrowquant.errors");
  PyErr_SetString(errors.attr(class_name).ptr(), message.c_str());
  throw nb::python_error();
}

// Raises the arrowquant.errors exception matching the status (the GIL must be held).
[[noreturn]] void raise_status(const arrow::Status& status) {
  using arrowquant::arrow_glue::ErrorKind;
  if (status.IsOutOfMemory()) throw std::bad_alloc();
  const char* class_name = "ArrowQuantError";
  if (auto kind = arrowquant::arrow_glue::error_kind(status)) {
    switch (*kind) {
      case ErrorKind::kParameter: class_name = "ParameterError"; break;
      case ErrorKind::kSchema: class_name = "SchemaError"; break;
      case ErrorKind::kColumnType: class_name = "ColumnTypeError"; break;
      case ErrorKind::kData: class_name = "DataError"; break;
    }
  } else if (status.IsTypeError()) {
    class_name = "ColumnTypeError";
  } else if (status.IsInvalid() || status.IsCapacityError() || status.IsIndexError()) {
    class_name = "DataError";
  }
  raise_error(class_name, status.message());
}

using BatchList = std::vector<std::shared_ptr<arrow::RecordBatch>>;

// Import inputs, run `work`, export the results; the GIL is released for all of it.
template <typename Work>
void run_on_batches(const std::vector<CDataAddresses>& inputs, const std::vector<CDataAddresses>& outputs, Work&& work) {
  arrow::Status status;
  {
    ReleasedGil released;
    status = [&]() -> arrow::Status {
      ARROW_ASSIGN_OR_RAISE(BatchList batches, arrowquant::arrow_glue::import_record_batches(inputs));
      ARROW_ASSIGN_OR_RAISE(BatchList results, work(batches));
      return arrowquant::arrow_glue::export_record_batches(results, outputs);
    }();
  }
  if (!status.ok()) raise_status(status);
}

// The smoothness metrics of one tensor as a tuple: (boundaries, jump_sum, boundary_score_sum,
// max_scale_jump, high, medium, [(row, group, scale_jump, high), ...]).
nb::tuple markov_tuple(const arrowquant::engine::MarkovSummary& m) {
  nb::list violations;
  for (const auto& v : m.first_violations) violations.append(nb::make_tuple(v.row, v.group, v.scale_jump, v.high));
  return nb::make_tuple(m.boundaries, m.jump_sum, m.boundary_score_sum, m.max_scale_jump, m.high, m.medium, violations);
}


// Read-only, C-contiguous host arrays of any dtype: the Python layer has checked the dtype and
// says how to read the elements (element_types); safetensors memory maps are read-only.
using InputArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
// One importance weight per column of a tensor's rows (an imatrix entry), float32.
using ImportanceArray = nb::ndarray<float, nb::ndim<1>, nb::ro, nb::c_contig, nb::device::cpu>;
template <typename T>
using OutputArray = nb::ndarray<nb::numpy, T, nb::ndim<1>>;
// Caller-owned float32 outputs to decode into (a reused buffer): writable, C-contiguous, on the CPU.
using IntoArray = nb::ndarray<float, nb::c_contig, nb::device::cpu>;

// Checks caller-given outputs (none, or one per tensor holding exactly its element count).
void check_outputs(const std::vector<IntoArray>& into, size_t n, const std::vector<int64_t>& numels,
                   const std::vector<std::string>& labels) {
  if (into.empty()) return;
  if (into.size() != n) raise_error("ParameterError", "outputs: give one array per tensor, or none");
  for (size_t i = 0; i < n; ++i) {
    if (static_cast<int64_t>(into[i].size()) != numels[i]) {
      raise_error("ParameterError", labels[i] + ": the output array holds " + std::to_string(into[i].size()) +
                                        " floats; the tensor has " + std::to_string(numels[i]));
    }
  }
}

// Outputs of 32 MB or more are allocated aligned to 2 MB and marked for transparent huge pages
// (where the system leaves that to madvise). glibc serves such sizes with a fresh mmap every time
// (32 MB is its largest mmap threshold), and first touching fresh memory 4 KB at a time costs a
// page fault each: decoding into a new 128 MB array ran at 0.9 G weights/s that way against 4.9
// with huge pages, and quantizing a 256 MB tensor 37% slower. Smaller outputs come from malloc,
// which reuses freed memory without faulting it in again (16 MB: 15.8 G weights/s, against 0.8 with
// huge pages, whose first touch zeroes 2 MB at a time).
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeOutputBytes = size_t{32} << 20;

void* allocate_output(size_t bytes) {
  if (bytes < kHugeOutputBytes) {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void* p = nullptr;
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  if (posix_memalign(&p, kHugePage, rounded) != 0) throw std::bad_alloc();
  madvise(p, rounded, MADV_HUGEPAGE);  // advice only: ignored where unsupported
  return p;
}

// A buffer that becomes a NumPy array without a copy: NumPy frees it through the capsule.
template <typename T>
struct OwnedBuffer {
  struct Free {
    void operator()(T* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<T[], Free> data;
  size_t size = 0;

  static OwnedBuffer zeroed_if(bool zero, int64_t n) { return zero ? zeroed(n) : uninitialized(n); }
  static OwnedBuffer zeroed(int64_t n) {
    OwnedBuffer b = uninitialized(n);
    std::memset(b.data.get(), 0, b.size * sizeof(T));
    return b;
  }
  static OwnedBuffer uninitialized(int64_t n) {
    const size_t count = static_cast<size_t>(n);
    return {std::unique_ptr<T[], Free>(static_cast<T*>(allocate_output(count * sizeof(T)))), count};
  }

  OutputArray<T> release_to_numpy() {
    T* raw = data.release();
    nb::capsule owner(raw, [](void* p) noexcept { std::free(p); });
    const size_t shape[1] = {size};
    return OutputArray<T>(raw, 1, shape, owner);
  }
};

std::vector<int64_t> shape_of(const InputArray& a) {
  std::vector<int64_t> shape(a.ndim());
  for (size_t d = 0; d < a.ndim(); ++d) shape[d] = static_cast<int64_t>(a.shape(d));
  return shape;
}

nb::list quantize_arrays(const std::vector<InputArray>& arrays, const std::vector<int>& element_types,
                         const std::vector<std::string>& labels, int bit_width, int group_size, bool symmetric,
                         const std::string& method, int num_threads, bool with_stats, double markov_threshold) {
  using namespace arrowquant;
  if (arrays.size() != element_types.size() || arrays.size() != labels.size()) {
    raise_error("ParameterError", "arrays, element_types and labels must have the same length");
  }
  arrow_glue::QuantizeOptions options{markov_threshold, bit_width, group_size, symmetric, num_threads, method};
  if (arrow::Status st = arrow_glue::validate_quantize_options(options); !st.ok()) raise_status(st);

  std::vector<kernels::QuantizeJob> jobs(arrays.size());
  std::vector<OwnedBuffer<uint8_t>> packed(arrays.size());
  std::vector<OwnedBuffer<float>> scales(arrays.size()), zero_points(arrays.size());
  for (size_t i = 0; i < arrays.size(); ++i) {
    const int type = element_types[i];
    const size_t expected_itemsize = type == 0 ? 4 : 2;
    if (type < 0 || type > 2 || arrays[i].itemsize() != expected_itemsize) {
      raise_error("ParameterError", labels[i] + ": element type " + std::to_string(type) + " does not match an itemsize of " +
                                        std::to_string(arrays[i].itemsize()));
    }
    kernels::QuantizeJob& job = jobs[i];
    job.weights = arrays[i].data();
    job.element_type = static_cast<kernels::ElementType>(type);
    job.geometry = engine::geometry_for_shape(shape_of(arrays[i]), group_size);
    job.bits = bit_width;
    job.symmetric = symmetric;
    job.method = method == "search" ? kernels::Method::kSearch : kernels::Method::kRtn;
    packed[i] = OwnedBuffer<uint8_t>::zeroed_if(kernels::packed_needs_zeroing(job.geometry, bit_width),
                                                engine::packed_bytes(job.geometry.numel(), bit_width));
    scales[i] = OwnedBuffer<float>::uninitialized(job.geometry.num_groups());
    zero_points[i] = OwnedBuffer<float>::uninitialized(job.geometry.num_groups());
    job.packed = packed[i].data.get();
    job.scales = scales[i].data.get();
    job.zero_points = zero_points[i].data.get();
  }
  std::optional<engine::NonFiniteValue> bad;
  std::vector<kernels::ErrorStats> stats;
  std::vector<engine::MarkovSummary> markov;
  {
    ReleasedGil released;
    bad = engine::quantize_tensors(jobs, num_threads, with_stats ? &stats : nullptr, &markov, markov_threshold);
  }
  if (bad) {
    raise_error("DataError", labels[static_cast<size_t>(bad->tensor_index)] + ": contains NaN or infinity at (flattened) index " +
                                 std::to_string(bad->element_index) + "; only finite values can be quantized");
  }
  nb::list results;
  for (size_t i = 0; i < arrays.size(); ++i) {
    nb::object error_stats = nb::none();
    if (with_stats) {
      const kernels::ErrorStats& e = stats[i];
      error_stats = nb::make_tuple(e.sum_xx, e.sum_yy, e.sum_xy, e.sum_dd, e.max_abs_error, e.count);
    }
    results.append(nb::make_tuple(packed[i].release_to_numpy(), scales[i].release_to_numpy(),
                                  zero_points[i].release_to_numpy(), error_stats, markov_tuple(markov[i])));
  }
  return results;
}

nb::list dequantize_arrays(const std::vector<InputArray>& packed, const std::vector<InputArray>& scales,
                           const std::vector<InputArray>& zero_points, const std::vector<std::vector<int64_t>>& shapes,
                           const std::vector<int>& bit_widths, const std::vector<int>& group_sizes,
                           const std::vector<std::string>& labels, int num_threads, const std::vector<IntoArray>& into) {
  using namespace arrowquant;
  const size_t n = packed.size();
  if (scales.size() != n || zero_points.size() != n || shapes.size() != n || bit_widths.size() != n ||
      group_sizes.size() != n || labels.size() != n) {
    raise_error("ParameterError", "dequantize_arrays: all argument lists must have the same length");
  }
  std::vector<kernels::DequantizeJob> jobs(n);
  std::vector<OwnedBuffer<float>> outputs(n);
  for (size_t i = 0; i < n; ++i) {
    if (packed[i].itemsize() != 1 || scales[i].itemsize() != 4 || zero_points[i].itemsize() != 4) {
      raise_error("DataError", labels[i] + ": quantized_data must be bytes and scales / zero_points float32");
    }
    kernels::DequantizeJob& job = jobs[i];
    if (std::string error = engine::check_quantized_tensor(
            shapes[i], bit_widths[i], group_sizes[i], static_cast<int64_t>(packed[i].size()),
            static_cast<int64_t>(scales[i].size()), static_cast<int64_t>(zero_points[i].size()), &job);
        !error.empty()) {
      raise_error("DataError", labels[i] + ": " + error);
    }
    job.packed = static_cast<const uint8_t*>(packed[i].data());
    job.scales = static_cast<const float*>(scales[i].data());
    job.zero_points = static_cast<const float*>(zero_points[i].data());
  }
  std::vector<int64_t> numels(n);
  for (size_t i = 0; i < n; ++i) numels[i] = jobs[i].geometry.numel();
  check_outputs(into, n, numels, labels);
  for (size_t i = 0; i < n; ++i) {
    if (into.empty()) outputs[i] = OwnedBuffer<float>::uninitialized(numels[i]);
    jobs[i].weights = into.empty() ? outputs[i].data.get() : into[i].data();
  }
  {
    ReleasedGil released;
    engine::dequantize_tensors(jobs, num_threads);
  }
  nb::list results;
  // Decoded into caller-given outputs: the caller holds them already; nothing to return.
  if (into.empty()) {
    for (auto& out : outputs) results.append(out.release_to_numpy());
  }
  return results;
}

// ------------------------------------------------------------------------------------------------
// GGUF tensor types

// The type table as Python tuples: (ggml id, name, block size, bytes per block, has its own search encoder).
nb::list gguf_types() {
  nb::list out;
  for (const auto& t : arrowquant::kernels::gguf::supported_types()) {
    out.append(nb::make_tuple(static_cast<int>(t.type), t.name, t.block_size, t.block_bytes, t.encode_search != nullptr,
                              t.encode_imatrix != nullptr));
  }
  return out;
}

const arrowquant::kernels::gguf::TypeTraits& gguf_type(int ggml_id, const std::string& label) {
  const auto* t = arrowquant::kernels::gguf::find_type(ggml_id);
  if (t == nullptr) raise_error("ParameterError", label + ": GGUF type id " + std::to_string(ggml_id) + " is not supported");
  return *t;
}

// Encodes arrays (float32, or 2-byte float16 / bfloat16 bits per element_types) into ggml blocks.
nb::list gguf_encode_arrays(const std::vector<InputArray>& arrays, const std::vector<int>& element_types,
                            const std::vector<int>& type_ids, const std::vector<std::string>& labels, int num_threads,
                            const std::string& method, const std::vector<std::optional<ImportanceArray>>& importance) {
  using namespace arrowquant;
  const size_t n = arrays.size();
  if (element_types.size() != n || type_ids.size() != n || labels.size() != n) {
    raise_error("ParameterError", "arrays, element_types, type_ids and labels must have the same length");
  }
  if (method != "ggml" && method != "search") raise_error("ParameterError", "method must be 'ggml' or 'search'; got '" + method + "'");
  std::vector<engine::GgufEncodeJob> jobs(n);
  std::vector<OwnedBuffer<uint8_t>> outputs(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& type = gguf_type(type_ids[i], labels[i]);
    const int element = element_types[i];
    if (element < 0 || element > 2 || arrays[i].itemsize() != (element == 0 ? 4u : 2u)) {
      raise_error("ParameterError", labels[i] + ": element type " + std::to_string(element) +
                                        " does not match an itemsize of " + std::to_string(arrays[i].itemsize()));
    }
    const auto numel = static_cast<int64_t>(arrays[i].size());
    if (numel % type.block_size != 0) {
      raise_error("DataError", labels[i] + ": " + std::to_string(numel) + " elements are not a multiple of " +
                                   type.name + "'s block of " + std::to_string(type.block_size));
    }
    jobs[i] = {arrays[i].data(), static_cast<kernels::ElementType>(element), numel, &type, nullptr, method == "search"};
    if (i < importance.size() && importance[i].has_value()) {  // ggml's importance-weighted quantizer, row by row
      const auto& w = *importance[i];
      const auto n_per_row = static_cast<int64_t>(w.size());
      if (type.encode_imatrix == nullptr) {
        raise_error("ParameterError", labels[i] + ": importance matrices apply to the quantized types, not to " +
                                          std::string(type.name));
      }
      if (n_per_row == 0 || n_per_row % type.block_size != 0 || numel % n_per_row != 0) {
        raise_error("DataError", labels[i] + ": an importance entry of " + std::to_string(n_per_row) +
                                     " values does not fit rows of a " + std::to_string(numel) + "-element tensor in " +
                                     type.name);
      }
      jobs[i].importance = w.data();
      jobs[i].n_per_row = n_per_row;
    }
    outputs[i] = OwnedBuffer<uint8_t>::uninitialized(kernels::gguf::encoded_bytes(type, numel));
    jobs[i].out = outputs[i].data.get();
  }
  std::optional<engine::NonFiniteValue> bad;
  {
    ReleasedGil released;
    bad = engine::gguf_encode(jobs, num_threads);
  }
  if (bad) {
    raise_error("DataError", labels[static_cast<size_t>(bad->tensor_index)] + ": contains NaN or infinity at (flattened) index " +
                                 std::to_string(bad->element_index) + "; only finite values can be quantized");
  }
  nb::list results;
  for (auto& out : outputs) results.append(out.release_to_numpy());
  return results;
}

// Decodes ggml blocks (uint8 arrays) of the given types and element counts into float32.
nb::list gguf_decode_arrays(const std::vector<InputArray>& encoded, const std::vector<int>& type_ids,
                            const std::vector<int64_t>& numels, const std::vector<std::string>& labels, int num_threads,
                            const std::vector<IntoArray>& into) {
  using namespace arrowquant;
  const size_t n = encoded.size();
  if (type_ids.size() != n || numels.size() != n || labels.size() != n) {
    raise_error("ParameterError", "encoded, type_ids, numels and labels must have the same length");
  }
  std::vector<engine::GgufDecodeJob> jobs(n);
  std::vector<OwnedBuffer<float>> outputs(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& type = gguf_type(type_ids[i], labels[i]);
    const int64_t numel = numels[i];
    if (numel < 0 || numel % type.block_size != 0 || encoded[i].itemsize() != 1 ||
        static_cast<int64_t>(encoded[i].size()) != kernels::gguf::encoded_bytes(type, numel)) {
      raise_error("DataError", labels[i] + ": " + std::to_string(encoded[i].size() * encoded[i].itemsize()) + " bytes of " +
                                   type.name + " cannot hold " + std::to_string(numel) + " elements (blocks of " +
                                   std::to_string(type.block_size) + " in " + std::to_string(type.block_bytes) + " bytes)");
    }
    jobs[i] = {static_cast<const uint8_t*>(encoded[i].data()), numel, &type, nullptr};
  }
  check_outputs(into, n, numels, labels);
  for (size_t i = 0; i < n; ++i) {
    if (into.empty()) outputs[i] = OwnedBuffer<float>::uninitialized(numels[i]);
    jobs[i].out = into.empty() ? outputs[i].data.get() : into[i].data();
  }
  {
    ReleasedGil released;
    engine::gguf_decode(jobs, num_threads);
  }
  nb::list results;  // decoded into caller-given outputs: nothing to return
  if (into.empty()) {
    for (auto& out : outputs) results.append(out.release_to_numpy());
  }
  return results;
}

// ------------------------------------------------------------------------------------------------
// Format version 2, scheme "kquant" (docs/format.md)

const arrowquant::kernels::gguf::TypeTraits& kquant_type_for(int bits, const std::string& label) {
  const auto* type = arrowquant::engine::kquant_type(bits);
  if (type == nullptr) raise_error("ParameterError", label + ": the kquant scheme has bit widths 2, 3, 4, 5, 6 and 8; got " + std::to_string(bits));
  return *type;
}

// Encodes arrays viewed as rows x cols matrices; per array (encoded bytes, stats-or-None).
nb::list kquant_encode_arrays(const std::vector<InputArray>& arrays, const std::vector<int>& element_types,
                              const std::vector<int64_t>& rows, const std::vector<int64_t>& cols,
                              const std::vector<std::string>& labels, int bits, bool rotate, const std::string& method,
                              int num_threads, bool with_stats) {
  using namespace arrowquant;
  const size_t n = arrays.size();
  if (element_types.size() != n || rows.size() != n || cols.size() != n || labels.size() != n) {
    raise_error("ParameterError", "arrays, element_types, rows, cols and labels must have the same length");
  }
  if (method != "rtn" && method != "search") raise_error("ParameterError", "method must be 'rtn' or 'search'; got '" + method + "'");
  const auto& type = kquant_type_for(bits, "kquant");
  std::vector<engine::KquantEncodeJob> jobs(n);
  std::vector<OwnedBuffer<uint8_t>> outputs(n);
  for (size_t i = 0; i < n; ++i) {
    const int element = element_types[i];
    if (element < 0 || element > 2 || arrays[i].itemsize() != (element == 0 ? 4u : 2u)) {
      raise_error("ParameterError", labels[i] + ": element type " + std::to_string(element) +
                                        " does not match an itemsize of " + std::to_string(arrays[i].itemsize()));
    }
    if (rows[i] < 0 || cols[i] < 0 || (cols[i] != 0 && rows[i] > static_cast<int64_t>(arrays[i].size()) / cols[i]) ||
        rows[i] * cols[i] != static_cast<int64_t>(arrays[i].size())) {
      raise_error("DataError", labels[i] + ": " + std::to_string(rows[i]) + " x " + std::to_string(cols[i]) +
                                   " does not match the array's " + std::to_string(arrays[i].size()) + " elements");
    }
    jobs[i] = {arrays[i].data(), static_cast<kernels::ElementType>(element), rows[i], cols[i], &type, rotate, method == "search", nullptr};
    outputs[i] = OwnedBuffer<uint8_t>::uninitialized(engine::kquant_encoded_bytes(type, rows[i], cols[i]));
    jobs[i].out = outputs[i].data.get();
  }
  std::optional<engine::NonFiniteValue> bad;
  std::vector<kernels::ErrorStats> stats;
  {
    ReleasedGil released;
    bad = engine::kquant_encode(jobs, num_threads, with_stats ? &stats : nullptr);
  }
  if (bad) {
    raise_error("DataError", labels[static_cast<size_t>(bad->tensor_index)] + ": contains NaN or infinity at (flattened) index " +
                                 std::to_string(bad->element_index) + "; only finite values can be quantized");
  }
  nb::list results;
  for (size_t i = 0; i < n; ++i) {
    nb::object error_stats = nb::none();
    if (with_stats) {
      const kernels::ErrorStats& e = stats[i];
      error_stats = nb::make_tuple(e.sum_xx, e.sum_yy, e.sum_xy, e.sum_dd, e.max_abs_error, e.count);
    }
    results.append(nb::make_tuple(outputs[i].release_to_numpy(), error_stats));
  }
  return results;
}

// Decodes kquant tensors (uint8 arrays, rows x cols each) into float32.
nb::list kquant_decode_arrays(const std::vector<InputArray>& encoded, const std::vector<int64_t>& rows,
                              const std::vector<int64_t>& cols, const std::vector<int>& bits, const std::vector<bool>& rotate,
                              const std::vector<std::string>& labels, int num_threads, const std::vector<IntoArray>& into) {
  using namespace arrowquant;
  const size_t n = encoded.size();
  if (rows.size() != n || cols.size() != n || bits.size() != n || rotate.size() != n || labels.size() != n) {
    raise_error("ParameterError", "encoded, rows, cols, bits, rotate and labels must have the same length");
  }
  std::vector<engine::KquantDecodeJob> jobs(n);
  std::vector<OwnedBuffer<float>> outputs(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& type = kquant_type_for(bits[i], labels[i]);
    if (rows[i] < 0 || cols[i] < 0 || (cols[i] != 0 && rows[i] > (int64_t{1} << 62) / engine::kquant_padded_cols(cols[i]))) {
      raise_error("DataError", labels[i] + ": " + std::to_string(rows[i]) + " x " + std::to_string(cols[i]) + " is not a valid matrix");
    }
    const int64_t expected = engine::kquant_encoded_bytes(type, rows[i], cols[i]);
    if (encoded[i].itemsize() != 1 || static_cast<int64_t>(encoded[i].size()) != expected) {
      raise_error("DataError", labels[i] + ": holds " + std::to_string(encoded[i].size() * encoded[i].itemsize()) +
                                   " bytes but " + std::to_string(rows[i]) + " x " + std::to_string(cols[i]) + " at " +
                                   std::to_string(bits[i]) + " bits (" + type.name + " blocks, rows padded to 256) needs " +
                                   std::to_string(expected));
    }
    jobs[i] = {static_cast<const uint8_t*>(encoded[i].data()), rows[i], cols[i], &type, rotate[i], nullptr};
  }
  std::vector<int64_t> numels(n);
  for (size_t i = 0; i < n; ++i) numels[i] = rows[i] * cols[i];
  check_outputs(into, n, numels, labels);
  for (size_t i = 0; i < n; ++i) {
    if (into.empty()) outputs[i] = OwnedBuffer<float>::uninitialized(numels[i]);
    jobs[i].out = into.empty() ? outputs[i].data.get() : into[i].data();
  }
  {
    ReleasedGil released;
    engine::kquant_decode(jobs, num_threads);
  }
  nb::list results;
  // Decoded into caller-given outputs: the caller holds them already; nothing to return.
  if (into.empty()) {
    for (auto& out : outputs) results.append(out.release_to_numpy());
  }
  return results;
}

}  // namespace

NB_MODULE(_core, m) {
  nb::module_::import_("atexit").attr("register")(nb::cpp_function([] {
    g_exiting_thread.store(std::this_thread::get_id());
    g_interpreter_exiting.store(true);
  }));
  m.doc() = "arrowquant's compiled core (use the arrowquant package, not this module)";

  if (std::string error = arrowquant::engine::select_kernels_from_environment(); !error.empty()) {
    throw nb::import_error(error.c_str());
  }

  m.def("kquant_encode_arrays", &kquant_encode_arrays, nb::arg("arrays"), nb::arg("element_types"), nb::arg("rows"),
        nb::arg("cols"), nb::arg("labels"), nb::arg("bits"), nb::arg("rotate"), nb::arg("method"), nb::arg("num_threads"),
        nb::arg("with_stats"), "Format v2 kquant encoder: (encoded, stats-or-None) per array.");
  m.def("kquant_decode_arrays", &kquant_decode_arrays, nb::arg("encoded"), nb::arg("rows"), nb::arg("cols"), nb::arg("bits"),
        nb::arg("rotate"), nb::arg("labels"), nb::arg("num_threads"), nb::arg("outputs") = std::vector<IntoArray>(),
        "Format v2 kquant decoder: float32 arrays (or into the given outputs; then an empty list).");
  m.def("gguf_types", &gguf_types, "GGUF tensor types: [(ggml id, name, block size, bytes per block, has search, has importance-weighted encoder)]");
  m.def("gguf_encode_arrays", &gguf_encode_arrays, nb::arg("arrays"), nb::arg("element_types"), nb::arg("type_ids"),
        nb::arg("labels"), nb::arg("num_threads"), nb::arg("method") = "ggml",
        nb::arg("importance") = std::vector<std::optional<ImportanceArray>>());
  m.def("gguf_decode_arrays", &gguf_decode_arrays, nb::arg("encoded"), nb::arg("type_ids"), nb::arg("numels"),
        nb::arg("labels"), nb::arg("num_threads"), nb::arg("outputs") = std::vector<IntoArray>());

  m.def(
      "quantize_batches",
      [](const std::vector<CDataAddresses>& inputs, const std::vector<CDataAddresses>& outputs, int bit_width,
         int group_size, bool symmetric, const std::string& method, int num_threads, double markov_threshold,
         const std::string& scheme, bool rotate) {
        arrowquant::arrow_glue::QuantizeOptions options{markov_threshold, bit_width, group_size, symmetric, num_threads, method,
                                                        scheme, rotate};
        std::vector<arrowquant::engine::MarkovSummary> markov;
        run_on_batches(inputs, outputs, [&](const BatchList& batches) {
          return arrowquant::arrow_glue::quantize_record_batches(batches, options, &markov);
        });
        nb::list per_row;
        for (const auto& m : markov) per_row.append(markov_tuple(m));
        return per_row;
      },
      nb::arg("inputs"), nb::arg("outputs"), nb::arg("bit_width"), nb::arg("group_size"), nb::arg("symmetric"),
      nb::arg("method"), nb::arg("num_threads"), nb::arg("markov_threshold"), nb::arg("scheme") = "affine",
      nb::arg("rotate") = true,
      "Quantizes record batches given as (ArrowArray*, ArrowSchema*) addresses into the output addresses; "
      "returns each row's parameter-smoothness metrics.");

  m.def(
      "dequantize_batches",
      [](const std::vector<CDataAddresses>& inputs, const std::vector<CDataAddresses>& outputs, int num_threads) {
        run_on_batches(inputs, outputs, [&](const BatchList& batches) {
          return arrowquant::arrow_glue::dequantize_record_batches(batches, num_threads);
        });
      },
      nb::arg("inputs"), nb::arg("outputs"), nb::arg("num_threads"),
      "Dequantizes record batches of the quantized schema.");

  m.def("quantize_arrays", &quantize_arrays, nb::arg("arrays"), nb::arg("element_types"), nb::arg("labels"),
        nb::arg("bit_width"), nb::arg("group_size"), nb::arg("symmetric"), nb::arg("method"), nb::arg("num_threads"),
        nb::arg("with_stats"), nb::arg("markov_threshold"),
        "Quantizes C-contiguous arrays (element type 0 float32, 1 float16, 2 bfloat16); returns "
        "(packed, scales, zero_points, stats-or-None, markov) per array, arrays owning their buffers.");
  m.def("dequantize_arrays", &dequantize_arrays, nb::arg("packed"), nb::arg("scales"), nb::arg("zero_points"),
        nb::arg("shapes"), nb::arg("bit_widths"), nb::arg("group_sizes"), nb::arg("labels"), nb::arg("num_threads"), nb::arg("outputs") = std::vector<IntoArray>(),
        "Decodes packed tensors to flat float32 arrays after checking every length (or into the given "
        "outputs; then an empty list).");

  m.def("last_kernel_seconds", &arrowquant::engine::last_kernel_seconds,
        "Seconds the most recent quantize/dequantize spent in the kernels (for benchmarks).");

  m.def("simd_info", [] {
    const auto& cpu = arrowquant::kernels::cpu_features();
    nb::list supported;
    supported.append("scalar");
    if (cpu.avx2_fma_f16c) supported.append("avx2");
    if (cpu.avx512_f_bw_vl_dq) supported.append("avx512");
    nb::dict info;
    info["active"] = arrowquant::engine::active_kernels().name;
    info["supported"] = supported;
    info["forced"] = arrowquant::engine::kernels_forced();
    info["avx512_bf16"] = cpu.avx512_bf16;
    info["hardware_threads"] = arrowquant::engine::hardware_threads();
    return info;
  });

  m.def(
      "select_isa",
      [](const std::string& name) {
        if (std::string error = arrowquant::engine::select_kernels(name); !error.empty()) raise_error("ParameterError", error);
      },
      nb::arg("name"), "Forces a SIMD path ('scalar', 'avx2', 'avx512') or 'auto' for the best one.");
}
