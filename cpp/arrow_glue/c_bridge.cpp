#include "arrow_glue/c_bridge.h"

#include <arrow/c/abi.h>
#include <arrow/c/bridge.h>
#include <arrow/c/helpers.h>

#include "arrow_glue/errors.h"

namespace arrowquant::arrow_glue {

namespace {

ArrowArray* as_array(uintptr_t address) { return reinterpret_cast<ArrowArray*>(address); }
ArrowSchema* as_schema(uintptr_t address) { return reinterpret_cast<ArrowSchema*>(address); }

void release_pair(const CDataAddresses& pair) {
  if (ArrowArray* a = as_array(pair.first); a != nullptr && !ArrowArrayIsReleased(a)) ArrowArrayRelease(a);
  if (ArrowSchema* s = as_schema(pair.second); s != nullptr && !ArrowSchemaIsReleased(s)) ArrowSchemaRelease(s);
}

}  // namespace

arrow::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> import_record_batches(
    const std::vector<CDataAddresses>& inputs) {
  std::vector<std::shared_ptr<arrow::RecordBatch>> batches;
  batches.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const CDataAddresses& pair = inputs[i];
    arrow::Result<std::shared_ptr<arrow::RecordBatch>> batch =
        (pair.first == 0 || pair.second == 0)
            ? arrow::Result<std::shared_ptr<arrow::RecordBatch>>(ParameterError("null ArrowArray/ArrowSchema address"))
            : arrow::ImportRecordBatch(as_array(pair.first), as_schema(pair.second));
    if (!batch.ok()) {
      // The importer releases the schema even on failure, not necessarily the array.
      for (size_t j = i; j < inputs.size(); ++j) release_pair(inputs[j]);
      return batch.status().WithMessage("cannot import record batch ", i, " through the Arrow C Data Interface: ",
                                        batch.status().message());
    }
    // A foreign producer's offsets are not checked by the importer beyond the first and last one;
    // the kernels read through them, so every offset is checked here (O(rows) for our columns).
    if (arrow::Status valid = (*batch)->ValidateFull(); !valid.ok()) {
      for (size_t j = i + 1; j < inputs.size(); ++j) release_pair(inputs[j]);
      return DataError("record batch " + std::to_string(i) + " is malformed: " + valid.message());
    }
    batches.push_back(std::move(*batch));
  }
  return batches;
}

arrow::Status export_record_batches(const std::vector<std::shared_ptr<arrow::RecordBatch>>& batches,
                                    const std::vector<CDataAddresses>& outputs) {
  if (batches.size() != outputs.size()) {
    return ParameterError("expected " + std::to_string(batches.size()) + " output struct pairs, got " +
                          std::to_string(outputs.size()));
  }
  for (const auto& pair : outputs) {
    if (pair.first == 0 || pair.second == 0) return ParameterError("null ArrowArray/ArrowSchema output address");
    ArrowArrayMarkReleased(as_array(pair.first));
    ArrowSchemaMarkReleased(as_schema(pair.second));
  }
  for (size_t i = 0; i < batches.size(); ++i) {
    arrow::Status st = arrow::ExportRecordBatch(*batches[i], as_array(outputs[i].first), as_schema(outputs[i].second));
    if (!st.ok()) {
      for (size_t j = 0; j <= i; ++j) release_pair(outputs[j]);
      return st;
    }
  }
  return arrow::Status::OK();
}

}  // namespace arrowquant::arrow_glue
