// Quantize / dequantize Arrow record batches (one row per layer) with the kernels, zero-copy on
// the input side, into output buffers allocated once at their final size. The table layouts are
// docs/format.md; every error names the parameter, column or layer concerned.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <arrow/record_batch.h>
#include <arrow/result.h>
#include <arrow/type_fwd.h>

#include "engine/markov_metrics.h"

namespace arrowquant::arrow_glue {

struct QuantizeOptions {
  double markov_threshold = engine::kDefaultMarkovThreshold;
  int bit_width = 4;
  int group_size = 128;
  bool symmetric = false;
  int num_threads = 0;  // 0: all hardware threads
  std::string method = "rtn";  // "rtn" or "search"
  std::string scheme = "affine";  // "affine" (format version 1) or "kquant" (version 2)
  bool rotate = true;             // kquant only: the hadamard256 rotation
};

// Format identification stored in the output schema's metadata.
inline constexpr const char* kFormatKey = "arrowquant.format";
inline constexpr const char* kFormatName = "arrowquant.packed";
inline constexpr const char* kFormatVersionKey = "arrowquant.format_version";
inline constexpr const char* kFormatVersion = "1";
// Tables with a kquant row carry the scheme and rotation columns and say version 2.
inline constexpr const char* kFormatVersion2 = "2";

arrow::Status validate_quantize_options(const QuantizeOptions& options);

// Output schema of quantize (large == the weights were large_list: quantized_data is large_binary;
// v2 == the scheme and rotation columns follow, and the metadata says format version 2).
std::shared_ptr<arrow::Schema> quantized_schema(bool large, bool v2 = false);

// One output batch per input batch, rows in input order. All batches are validated before any
// work; on error nothing is returned.
// If markov is given it receives the parameter-smoothness metrics of every row, in order.
arrow::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> quantize_record_batches(
    const std::vector<std::shared_ptr<arrow::RecordBatch>>& batches, const QuantizeOptions& options,
    std::vector<engine::MarkovSummary>* markov = nullptr);

// Inverse: takes batches of the quantized schema (version 1, or version 2 with a scheme column:
// each row decoded by its scheme), checks every length against shape and bits before reading, returns layer_name, weights (list<float32>, large_list for large_binary), shape.
arrow::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> dequantize_record_batches(
    const std::vector<std::shared_ptr<arrow::RecordBatch>>& batches, int num_threads);

}  // namespace arrowquant::arrow_glue
