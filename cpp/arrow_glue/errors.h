// Errors of the Arrow layer: an arrow::Status whose detail says which kind of user error it is,
// so the binding can map it to the matching Python exception in one place.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <arrow/status.h>

namespace arrowquant::arrow_glue {

enum class ErrorKind {
  kParameter,   // a bad argument: bit_width, group_size, ...     -> ParameterError (ValueError)
  kSchema,      // a missing column                               -> SchemaError (ValueError)
  kColumnType,  // a column of the wrong type                     -> ColumnTypeError (TypeError)
  kData,        // NaN/Inf, nulls, shape mismatch, bad lengths    -> DataError (ValueError)
};

class ErrorKindDetail : public arrow::StatusDetail {
 public:
  explicit ErrorKindDetail(ErrorKind kind) : kind_(kind) {}
  const char* type_id() const override { return "arrowquant::ErrorKindDetail"; }
  std::string ToString() const override;
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

arrow::Status make_error(ErrorKind kind, std::string message);
inline arrow::Status ParameterError(std::string m) { return make_error(ErrorKind::kParameter, std::move(m)); }
inline arrow::Status SchemaError(std::string m) { return make_error(ErrorKind::kSchema, std::move(m)); }
inline arrow::Status ColumnTypeError(std::string m) { return make_error(ErrorKind::kColumnType, std::move(m)); }
inline arrow::Status DataError(std::string m) { return make_error(ErrorKind::kData, std::move(m)); }

// The kind carried by a status; nullopt for a plain Arrow status (e.g. OutOfMemory).
std::optional<ErrorKind> error_kind(const arrow::Status& status);

}  // namespace arrowquant::arrow_glue
