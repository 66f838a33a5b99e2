// Moving record batches across the Arrow C Data Interface, with the ownership rules enforced:
// every struct handed to us is released exactly once, whatever fails.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <arrow/record_batch.h>
#include <arrow/result.h>

namespace arrowquant::arrow_glue {

// Addresses of a (struct ArrowArray*, struct ArrowSchema*) pair, as Python's pyarrow.cffi gives them.
using CDataAddresses = std::pair<uintptr_t, uintptr_t>;

// Imports every pair (moving each struct's contents out). On failure the structs not yet
// imported are released too, so the producer's data never leaks.
arrow::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> import_record_batches(
    const std::vector<CDataAddresses>& inputs);

// Exports batches[i] into outputs[i]. On failure, the ones already exported are released and
// every output struct is left released (release == NULL).
arrow::Status export_record_batches(const std::vector<std::shared_ptr<arrow::RecordBatch>>& batches,
                                    const std::vector<CDataAddresses>& outputs);

}  // namespace arrowquant::arrow_glue
