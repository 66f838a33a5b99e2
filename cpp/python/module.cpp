// arrowquant._core: argument conversion, GIL release and the one place where C++ errors become
// Python exceptions. No logic of its own.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrow_glue/c_bridge.h"
#include "arrow_glue/errors.h"
#include "arrow_glue/quantize_arrow.h"
#include "engine/kernel_selection.h"
#include "engine/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace nb = nanobind;
using arrowquant::arrow_glue::CDataAddresses;

namespace {

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
  nb::object errors = nb::module_::import_("arrowquant.errors");
  PyErr_SetString(errors.attr(class_name).ptr(), status.message().c_str());
  throw nb::python_error();
}

using BatchList = std::vector<std::shared_ptr<arrow::RecordBatch>>;

// Import inputs, run `work`, export the results; the GIL is released for all of it.
template <typename Work>
void run_on_batches(const std::vector<CDataAddresses>& inputs, const std::vector<CDataAddresses>& outputs, Work&& work) {
  arrow::Status status;
  {
    nb::gil_scoped_release release;
    status = [&]() -> arrow::Status {
      ARROW_ASSIGN_OR_RAISE(BatchList batches, arrowquant::arrow_glue::import_record_batches(inputs));
      ARROW_ASSIGN_OR_RAISE(BatchList results, work(batches));
      return arrowquant::arrow_glue::export_record_batches(results, outputs);
    }();
  }
  if (!status.ok()) raise_status(status);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "arrowquant's compiled core (use the arrowquant package, not this module)";

  if (std::string error = arrowquant::engine::select_kernels_from_environment(); !error.empty()) {
    throw nb::import_error(error.c_str());
  }

  m.def(
      "quantize_batches",
      [](const std::vector<CDataAddresses>& inputs, const std::vector<CDataAddresses>& outputs, int bit_width,
         int group_size, bool symmetric, int num_threads) {
        const arrowquant::arrow_glue::QuantizeOptions options{bit_width, group_size, symmetric, num_threads};
        run_on_batches(inputs, outputs, [&](const BatchList& batches) {
          return arrowquant::arrow_glue::quantize_record_batches(batches, options);
        });
      },
      nb::arg("inputs"), nb::arg("outputs"), nb::arg("bit_width"), nb::arg("group_size"), nb::arg("symmetric"),
      nb::arg("num_threads"),
      "Quantizes record batches given as (ArrowArray*, ArrowSchema*) addresses into the output addresses.");

  m.def(
      "dequantize_batches",
      [](const std::vector<CDataAddresses>& inputs, const std::vector<CDataAddresses>& outputs, int num_threads) {
        run_on_batches(inputs, outputs, [&](const BatchList& batches) {
          return arrowquant::arrow_glue::dequantize_record_batches(batches, num_threads);
        });
      },
      nb::arg("inputs"), nb::arg("outputs"), nb::arg("num_threads"),
      "Dequantizes record batches of the quantized schema.");

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
        if (std::string error = arrowquant::engine::select_kernels(name); !error.empty()) {
          nb::object errors = nb::module_::import_("arrowquant.errors");
          PyErr_SetString(errors.attr("ParameterError").ptr(), error.c_str());
          throw nb::python_error();
        }
      },
      nb::arg("name"), "Forces a SIMD path ('scalar', 'avx2', 'avx512') or 'auto' for the best one.");
}
