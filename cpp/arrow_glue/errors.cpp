#include "arrow_glue/errors.h"

namespace arrowquant::arrow_glue {

std::string ErrorKindDetail::ToString() const {
  switch (kind_) {
    case ErrorKind::kParameter: return "parameter";
    case ErrorKind::kSchema: return "schema";
    case ErrorKind::kColumnType: return "column type";
    case ErrorKind::kData: return "data";
  }
  return "unknown";
}

arrow::Status make_error(ErrorKind kind, std::string message) {
  const arrow::StatusCode code = kind == ErrorKind::kColumnType ? arrow::StatusCode::TypeError
                               : kind == ErrorKind::kSchema     ? arrow::StatusCode::KeyError
                                                                : arrow::StatusCode::Invalid;
  return arrow::Status(code, std::move(message), std::make_shared<ErrorKindDetail>(kind));
}

std::optional<ErrorKind> error_kind(const arrow::Status& status) {
  const auto& detail = status.detail();
  if (!detail || std::string(detail->type_id()) != "arrowquant::ErrorKindDetail") return std::nullopt;
  return static_cast<const ErrorKindDetail*>(detail.get())->kind();
}

}  // namespace arrowquant::arrow_glue
