#include "arrow_glue/quantize_arrow.h"

#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <arrow/array.h>
#include <arrow/buffer.h>
#include <arrow/builder.h>
#include <arrow/type.h>
#include <arrow/util/key_value_metadata.h>

#include "arrow_glue/errors.h"
#include "engine/kquant_engine.h"
#include "engine/quantize_engine.h"

namespace arrowquant::arrow_glue {

namespace {

using kernels::ElementType;

// ---------------------------------------------------------------------------------------------
// Column access

// A list, large_list or fixed_size_list column, read through one interface.
class ListColumn {
 public:
  static std::optional<ListColumn> wrap(const std::shared_ptr<arrow::Array>& array) {
    switch (array->type_id()) {
      case arrow::Type::LIST:
      case arrow::Type::LARGE_LIST:
      case arrow::Type::FIXED_SIZE_LIST: return ListColumn(array);
      default: return std::nullopt;
    }
  }

  int64_t offset(int64_t i) const {
    switch (array_->type_id()) {
      case arrow::Type::LIST: return static_cast<const arrow::ListArray&>(*array_).value_offset(i);
      case arrow::Type::LARGE_LIST: return static_cast<const arrow::LargeListArray&>(*array_).value_offset(i);
      default: return static_cast<const arrow::FixedSizeListArray&>(*array_).value_offset(i);
    }
  }
  int64_t length(int64_t i) const {
    switch (array_->type_id()) {
      case arrow::Type::LIST: return static_cast<const arrow::ListArray&>(*array_).value_length(i);
      case arrow::Type::LARGE_LIST: return static_cast<const arrow::LargeListArray&>(*array_).value_length(i);
      default: return static_cast<const arrow::FixedSizeListArray&>(*array_).value_length(i);
    }
  }
  bool is_null(int64_t i) const { return array_->IsNull(i); }
  const std::shared_ptr<arrow::Array>& values() const { return values_; }
  bool large() const { return array_->type_id() == arrow::Type::LARGE_LIST; }

  // Index of the first null value in row i, if any (only scans when the child has nulls).
  std::optional<int64_t> first_null_value(int64_t i) const {
    if (values_->null_count() == 0) return std::nullopt;
    const int64_t begin = offset(i), n = length(i);
    for (int64_t k = 0; k < n; ++k) {
      if (values_->IsNull(begin + k)) return k;
    }
    return std::nullopt;
  }

 private:
  explicit ListColumn(std::shared_ptr<arrow::Array> array) : array_(std::move(array)) {
    values_ = array_->type_id() == arrow::Type::LIST        ? static_cast<const arrow::ListArray&>(*array_).values()
              : array_->type_id() == arrow::Type::LARGE_LIST ? static_cast<const arrow::LargeListArray&>(*array_).values()
                                                             : static_cast<const arrow::FixedSizeListArray&>(*array_).values();
  }
  std::shared_ptr<arrow::Array> array_;
  std::shared_ptr<arrow::Array> values_;
};

bool is_integer_type(arrow::Type::type id) {
  switch (id) {
    case arrow::Type::INT8: case arrow::Type::INT16: case arrow::Type::INT32: case arrow::Type::INT64:
    case arrow::Type::UINT8: case arrow::Type::UINT16: case arrow::Type::UINT32: case arrow::Type::UINT64:
      return true;
    default: return false;
  }
}

// Value i of an integer array of any width (is_integer_type(type) must hold). uint64 values above
// INT64_MAX come back negative, which every caller rejects as out of range.
int64_t integer_at(const arrow::Array& array, int64_t i) {
  switch (array.type_id()) {
    case arrow::Type::INT8: return static_cast<const arrow::Int8Array&>(array).Value(i);
    case arrow::Type::INT16: return static_cast<const arrow::Int16Array&>(array).Value(i);
    case arrow::Type::INT32: return static_cast<const arrow::Int32Array&>(array).Value(i);
    case arrow::Type::INT64: return static_cast<const arrow::Int64Array&>(array).Value(i);
    case arrow::Type::UINT8: return static_cast<const arrow::UInt8Array&>(array).Value(i);
    case arrow::Type::UINT16: return static_cast<const arrow::UInt16Array&>(array).Value(i);
    case arrow::Type::UINT32: return static_cast<const arrow::UInt32Array&>(array).Value(i);
    default: return static_cast<int64_t>(static_cast<const arrow::UInt64Array&>(array).Value(i));
  }
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string column_names(const arrow::Schema& schema) {
  std::string out = "[";
  for (int i = 0; i < schema.num_fields(); ++i) out += (i ? ", " : "") + quoted(schema.field(i)->name());
  return out + "]";
}

arrow::Result<std::shared_ptr<arrow::Array>> required_column(const arrow::RecordBatch& batch, const char* name) {
  const std::shared_ptr<arrow::Array> column = batch.GetColumnByName(name);
  if (!column) {
    return SchemaError("column " + quoted(name) + " is missing; found columns " + column_names(*batch.schema()));
  }
  return column;
}

std::shared_ptr<arrow::Array> optional_column(const arrow::RecordBatch& batch, const char* name) {
  std::shared_ptr<arrow::Array> column = batch.GetColumnByName(name);
  if (column && column->type_id() == arrow::Type::NA) return nullptr;  // an all-null column of type null
  return column;
}

// The layer_name column: string or large_string, no nulls.
arrow::Status check_layer_names(const arrow::Array& names) {
  if (names.type_id() != arrow::Type::STRING && names.type_id() != arrow::Type::LARGE_STRING) {
    return ColumnTypeError("column 'layer_name' must be string or large_string; found " + names.type()->ToString());
  }
  if (names.null_count() > 0) {
    for (int64_t i = 0; i < names.length(); ++i) {
      if (names.IsNull(i)) return DataError("column 'layer_name' is null at row " + std::to_string(i));
    }
  }
  return arrow::Status::OK();
}

std::string_view layer_name_at(const arrow::Array& names, int64_t i) {
  return names.type_id() == arrow::Type::STRING ? static_cast<const arrow::StringArray&>(names).GetView(i)
                                                : static_cast<const arrow::LargeStringArray&>(names).GetView(i);
}

std::string layer_label(const arrow::Array& names, int64_t row) {
  return "layer " + quoted(layer_name_at(names, row)) + " (row " + std::to_string(row) + ")";
}

// Reads row i of a shape column (list of integers); an absent column or a null row is nullopt.
arrow::Result<std::optional<std::vector<int64_t>>> shape_at(const std::optional<ListColumn>& shapes, int64_t i) {
  if (!shapes || shapes->is_null(i)) return std::optional<std::vector<int64_t>>();
  std::vector<int64_t> dims(static_cast<size_t>(shapes->length(i)));
  const int64_t begin = shapes->offset(i);
  for (size_t d = 0; d < dims.size(); ++d) {
    if (shapes->values()->IsNull(begin + static_cast<int64_t>(d))) {
      return DataError("column 'shape' has a null dimension at row " + std::to_string(i));
    }
    dims[d] = integer_at(*shapes->values(), begin + static_cast<int64_t>(d));
  }
  return std::optional<std::vector<int64_t>>(std::move(dims));
}

arrow::Result<std::optional<ListColumn>> shape_column(const arrow::RecordBatch& batch) {
  const std::shared_ptr<arrow::Array> column = optional_column(batch, "shape");
  if (!column) return std::optional<ListColumn>();
  std::optional<ListColumn> shapes = ListColumn::wrap(column);
  if (!shapes || !is_integer_type(shapes->values()->type_id())) {
    return ColumnTypeError("column 'shape' must be a list of integers (list<int64>); found " + column->type()->ToString());
  }
  return shapes;
}

// ---------------------------------------------------------------------------------------------
// Output building

arrow::Result<std::shared_ptr<arrow::Buffer>> allocate(int64_t bytes, bool zeroed) {
  ARROW_ASSIGN_OR_RAISE(std::unique_ptr<arrow::Buffer> buffer, arrow::AllocateBuffer(bytes));
  if (zeroed && bytes > 0) std::memset(buffer->mutable_data(), 0, static_cast<size_t>(bytes));
  return std::shared_ptr<arrow::Buffer>(std::move(buffer));
}

// Offsets [0, l0, l0 + l1, ...] in OffsetT; `what` names the column in the overflow error.
template <typename OffsetT>
arrow::Result<std::shared_ptr<arrow::Buffer>> make_offsets(const std::vector<int64_t>& lengths, const char* what) {
  ARROW_ASSIGN_OR_RAISE(auto buffer, allocate(static_cast<int64_t>((lengths.size() + 1) * sizeof(OffsetT)), false));
  auto* out = reinterpret_cast<OffsetT*>(buffer->mutable_data());
  int64_t total = 0;
  out[0] = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    total += lengths[i];
    if (total > std::numeric_limits<OffsetT>::max()) {
      return DataError(std::string("column '") + what + "' would exceed the 2^31 - 1 values of a 32-bit offset " +
                       "list in one record batch; pass the weights as large_list or in smaller batches");
    }
    out[i + 1] = static_cast<OffsetT>(total);
  }
  return buffer;
}

int64_t sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// A list<value_type> (or large_list) array over a freshly allocated values buffer.
struct ListOutput {
  std::shared_ptr<arrow::Buffer> offsets, values;
};

template <typename OffsetT>
arrow::Result<ListOutput> allocate_list(const std::vector<int64_t>& lengths, int64_t value_bytes, bool zeroed, const char* what) {
  ListOutput out;
  ARROW_ASSIGN_OR_RAISE(out.offsets, make_offsets<OffsetT>(lengths, what));
  ARROW_ASSIGN_OR_RAISE(out.values, allocate(sum(lengths) * value_bytes, zeroed));
  return out;
}

std::shared_ptr<arrow::Array> list_array(const std::shared_ptr<arrow::DataType>& list_type,
                                         const std::shared_ptr<arrow::DataType>& value_type, int64_t rows,
                                         const ListOutput& list, int64_t num_values) {
  auto values = arrow::ArrayData::Make(value_type, num_values, {nullptr, list.values}, 0);
  return arrow::MakeArray(arrow::ArrayData::Make(list_type, rows, {nullptr, list.offsets}, {values}, 0));
}

std::shared_ptr<arrow::Array> binary_array(const std::shared_ptr<arrow::DataType>& type, int64_t rows, const ListOutput& bytes) {
  return arrow::MakeArray(arrow::ArrayData::Make(type, rows, {nullptr, bytes.offsets, bytes.values}, 0));
}

// layer_name as a string array of its own. Always a copy (names are small): reusing the imported
// input column would keep the whole input batch, weights included, alive as long as the output.
arrow::Result<std::shared_ptr<arrow::Array>> names_as_string(const std::shared_ptr<arrow::Array>& names) {
  arrow::StringBuilder builder;
  ARROW_RETURN_NOT_OK(builder.Reserve(names->length()));
  for (int64_t i = 0; i < names->length(); ++i) ARROW_RETURN_NOT_OK(builder.Append(layer_name_at(*names, i)));
  return builder.Finish();
}

arrow::Result<std::shared_ptr<arrow::Array>> shapes_array(const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<int64_t> ndims;
  ndims.reserve(shapes.size());
  for (const auto& s : shapes) ndims.push_back(static_cast<int64_t>(s.size()));
  ARROW_ASSIGN_OR_RAISE(ListOutput list, allocate_list<int32_t>(ndims, sizeof(int64_t), false, "shape"));
  auto* out = reinterpret_cast<int64_t*>(list.values->mutable_data());
  for (const auto& s : shapes) {
    if (!s.empty()) std::memcpy(out, s.data(), s.size() * sizeof(int64_t));
    out += s.size();
  }
  return list_array(arrow::list(arrow::int64()), arrow::int64(), static_cast<int64_t>(shapes.size()), list, sum(ndims));
}

template <typename ArrowType, typename CType>
arrow::Result<std::shared_ptr<arrow::Array>> constant_array(int64_t rows, CType value) {
  ARROW_ASSIGN_OR_RAISE(auto buffer, allocate(rows * static_cast<int64_t>(sizeof(CType)), false));
  auto* out = reinterpret_cast<CType*>(buffer->mutable_data());
  for (int64_t i = 0; i < rows; ++i) out[i] = value;
  return arrow::MakeArray(arrow::ArrayData::Make(std::make_shared<ArrowType>(), rows, {nullptr, buffer}, 0));
}

arrow::Result<std::shared_ptr<arrow::Array>> constant_bool_array(int64_t rows, bool value) {
  const int64_t bytes = (rows + 7) / 8;
  ARROW_ASSIGN_OR_RAISE(auto buffer, allocate(bytes, false));
  if (bytes > 0) std::memset(buffer->mutable_data(), value ? 0xFF : 0x00, static_cast<size_t>(bytes));
  return arrow::MakeArray(arrow::ArrayData::Make(arrow::boolean(), rows, {nullptr, buffer}, 0));
}

std::shared_ptr<arrow::KeyValueMetadata> format_metadata(bool v2) {
  return arrow::key_value_metadata({kFormatKey, kFormatVersionKey}, {kFormatName, v2 ? kFormatVersion2 : kFormatVersion});
}

arrow::Result<std::shared_ptr<arrow::Array>> constant_string_array(int64_t rows, const std::string& value) {
  arrow::StringBuilder builder;
  ARROW_RETURN_NOT_OK(builder.Reserve(rows));
  ARROW_RETURN_NOT_OK(builder.ReserveData(rows * static_cast<int64_t>(value.size())));
  for (int64_t i = 0; i < rows; ++i) ARROW_RETURN_NOT_OK(builder.Append(value));
  return builder.Finish();
}

bool is_kquant(const QuantizeOptions& options) { return options.scheme == "kquant"; }

// ---------------------------------------------------------------------------------------------
// Quantize

// Everything known about one input batch after validation.
struct QuantizeInput {
  std::shared_ptr<arrow::Array> names;
  bool large = false;
  std::vector<kernels::QuantizeJob> jobs;  // one per row; output pointers filled later
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> packed_bytes, num_groups;
};

arrow::Result<QuantizeInput> read_quantize_input(const arrow::RecordBatch& batch, const QuantizeOptions& options) {
  QuantizeInput in;
  ARROW_ASSIGN_OR_RAISE(in.names, required_column(batch, "layer_name"));
  ARROW_RETURN_NOT_OK(check_layer_names(*in.names));
  ARROW_ASSIGN_OR_RAISE(auto weights_array, required_column(batch, "weights"));
  std::optional<ListColumn> weights = ListColumn::wrap(weights_array);
  const arrow::Type::type value_type = weights ? weights->values()->type_id() : arrow::Type::NA;
  if (!weights || (value_type != arrow::Type::FLOAT && value_type != arrow::Type::HALF_FLOAT)) {
    std::string hint;
    if (value_type == arrow::Type::DOUBLE) {
      hint = " (float64: cast it to float32 first, e.g. with table.cast(...); 64-bit input gains nothing at 2-8 "
             "bits per weight)";
    }
    return ColumnTypeError("column 'weights' must be a list, large_list or fixed_size_list of float32 or float16; found " +
                           weights_array->type()->ToString() + hint);
  }
  ARROW_ASSIGN_OR_RAISE(std::optional<ListColumn> shapes, shape_column(batch));
  in.large = weights->large();

  const int64_t rows = batch.num_rows();
  const ElementType element_type = value_type == arrow::Type::FLOAT ? ElementType::kFloat32 : ElementType::kFloat16;
  const auto* f32 = element_type == ElementType::kFloat32
                        ? static_cast<const arrow::FloatArray&>(*weights->values()).raw_values() : nullptr;
  const auto* f16 = element_type == ElementType::kFloat16
                        ? static_cast<const arrow::HalfFloatArray&>(*weights->values()).raw_values() : nullptr;
  in.jobs.reserve(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    if (weights->is_null(i)) return DataError(layer_label(*in.names, i) + ": 'weights' is null");
    if (auto k = weights->first_null_value(i)) {
      return DataError(layer_label(*in.names, i) + ": 'weights' has a null at index " + std::to_string(*k));
    }
    const int64_t numel = weights->length(i);
    ARROW_ASSIGN_OR_RAISE(std::optional<std::vector<int64_t>> shape, shape_at(shapes, i));
    if (!shape) shape = std::vector<int64_t>{numel};
    const std::optional<int64_t> shape_numel = engine::element_count(*shape);
    if (!shape_numel) {
      return DataError(layer_label(*in.names, i) + ": shape " + engine::shape_text(*shape) +
                       " has a negative dimension or more elements than fit in 64 bits");
    }
    if (*shape_numel != numel) {
      return DataError(layer_label(*in.names, i) + ": shape " + engine::shape_text(*shape) + " has " +
                       std::to_string(*shape_numel) + " elements but 'weights' has " + std::to_string(numel));
    }
    kernels::QuantizeJob job;
    job.element_type = element_type;
    const int64_t first = weights->offset(i);
    job.weights = element_type == ElementType::kFloat32 ? static_cast<const void*>(f32 + first)
                                                        : static_cast<const void*>(f16 + first);
    job.geometry = engine::geometry_for_shape(*shape, options.group_size);
    job.bits = options.bit_width;
    job.symmetric = options.symmetric;
    job.method = options.method == "search" ? kernels::Method::kSearch : kernels::Method::kRtn;
    in.jobs.push_back(job);
    if (is_kquant(options)) {
      // Super-blocks hold their own parameters: no scales or zero points.
      in.packed_bytes.push_back(engine::kquant_encoded_bytes(*engine::kquant_type(options.bit_width), 1, numel));
      in.num_groups.push_back(0);
    } else {
      in.packed_bytes.push_back(engine::packed_bytes(numel, options.bit_width));
      in.num_groups.push_back(job.geometry.num_groups());
    }
    in.shapes.push_back(std::move(*shape));
  }
  return in;
}

struct QuantizeOutput {
  ListOutput packed, scales, zero_points;
};

template <typename OffsetT>
arrow::Result<QuantizeOutput> allocate_quantize_output(QuantizeInput& in) {
  QuantizeOutput out;
  ARROW_ASSIGN_OR_RAISE(out.packed, allocate_list<OffsetT>(in.packed_bytes, 1, false, "quantized_data"));
  ARROW_ASSIGN_OR_RAISE(out.scales, allocate_list<int32_t>(in.num_groups, sizeof(float), false, "scales"));
  ARROW_ASSIGN_OR_RAISE(out.zero_points, allocate_list<int32_t>(in.num_groups, sizeof(float), false, "zero_points"));
  uint8_t* packed = out.packed.values->mutable_data();
  auto* scales = reinterpret_cast<float*>(out.scales.values->mutable_data());
  auto* zero_points = reinterpret_cast<float*>(out.zero_points.values->mutable_data());
  for (size_t i = 0; i < in.jobs.size(); ++i) {
    if (in.num_groups[i] > 0 && kernels::packed_needs_zeroing(in.jobs[i].geometry, in.jobs[i].bits)) {
      std::memset(packed, 0, static_cast<size_t>(in.packed_bytes[i]));
    }
    in.jobs[i].packed = packed;
    in.jobs[i].scales = scales;
    in.jobs[i].zero_points = zero_points;
    packed += in.packed_bytes[i];
    scales += in.num_groups[i];
    zero_points += in.num_groups[i];
  }
  return out;
}

arrow::Result<std::shared_ptr<arrow::RecordBatch>> assemble_quantized(const QuantizeInput& in, const QuantizeOutput& out,
                                                                      const QuantizeOptions& options) {
  const int64_t rows = static_cast<int64_t>(in.jobs.size());
  ARROW_ASSIGN_OR_RAISE(auto names, names_as_string(in.names));
  ARROW_ASSIGN_OR_RAISE(auto shapes, shapes_array(in.shapes));
  const bool v2 = is_kquant(options);
  ARROW_ASSIGN_OR_RAISE(auto bit_width, (constant_array<arrow::UInt8Type, uint8_t>(rows, static_cast<uint8_t>(options.bit_width))));
  ARROW_ASSIGN_OR_RAISE(auto group_size, (constant_array<arrow::Int32Type, int32_t>(
                                             rows, v2 ? static_cast<int32_t>(engine::kKquantBlock) : options.group_size)));
  ARROW_ASSIGN_OR_RAISE(auto symmetric, constant_bool_array(rows, v2 ? false : options.symmetric));
  const int64_t groups = sum(in.num_groups);
  std::vector<std::shared_ptr<arrow::Array>> columns = {
      names,
      binary_array(in.large ? arrow::large_binary() : arrow::binary(), rows, out.packed),
      list_array(arrow::list(arrow::float32()), arrow::float32(), rows, out.scales, groups),
      list_array(arrow::list(arrow::float32()), arrow::float32(), rows, out.zero_points, groups),
      shapes, bit_width, group_size, symmetric};
  if (v2) {
    ARROW_ASSIGN_OR_RAISE(auto scheme, constant_string_array(rows, options.scheme));
    ARROW_ASSIGN_OR_RAISE(auto rotation, constant_string_array(rows, options.rotate ? "hadamard256" : "none"));
    columns.push_back(scheme);
    columns.push_back(rotation);
  }
  return arrow::RecordBatch::Make(quantized_schema(in.large, v2), rows, std::move(columns));
}

// ---------------------------------------------------------------------------------------------
// Dequantize

struct DequantizeInput {
  std::shared_ptr<arrow::Array> names;
  bool large = false;
  std::vector<kernels::DequantizeJob> jobs;          // affine rows
  std::vector<engine::KquantDecodeJob> kquant_jobs;  // kquant rows
  std::vector<bool> row_is_kquant;                   // per row: which list holds its job (in row order)
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> numel;
};

// A version-2 table's per-row text column (scheme, rotation): string or large_string, no nulls.
arrow::Result<std::shared_ptr<arrow::Array>> text_column(const arrow::RecordBatch& batch, const char* name) {
  ARROW_ASSIGN_OR_RAISE(auto column, required_column(batch, name));
  if (column->type_id() != arrow::Type::STRING && column->type_id() != arrow::Type::LARGE_STRING) {
    return ColumnTypeError(std::string("column '") + name + "' must be string; found " + column->type()->ToString());
  }
  return column;
}

// Checks a kquant row's lengths against its shape and bit width; fills the job's geometry and type.
std::string check_kquant_tensor(const std::vector<int64_t>& shape, int64_t bits, int64_t group_size, std::string_view rotation,
                                int64_t bytes, int64_t scales_len, int64_t zero_points_len, engine::KquantDecodeJob* job) {
  const kernels::gguf::TypeTraits* type = bits >= 0 && bits <= 8 ? engine::kquant_type(static_cast<int>(bits)) : nullptr;
  if (type == nullptr) return "a kquant tensor has bit_width 2, 3, 4, 5, 6 or 8; found " + std::to_string(bits);
  if (group_size != engine::kKquantBlock) return "a kquant tensor has group_size 256; found " + std::to_string(group_size);
  if (rotation != "none" && rotation != "hadamard256") {
    return "rotation must be 'none' or 'hadamard256'; found " + quoted(rotation);
  }
  if (scales_len != 0 || zero_points_len != 0) {
    return "a kquant tensor has no scales or zero points; found " + std::to_string(scales_len) + " and " +
           std::to_string(zero_points_len);
  }
  const std::optional<int64_t> numel = engine::element_count(shape);
  // The flattened tensor padded to whole super-blocks must fit in 62 bits before bytes are counted.
  if (!numel || *numel > (int64_t{1} << 61)) {
    return "shape " + engine::shape_text(shape) + " has a negative dimension or more elements than fit in 64 bits";
  }
  const int64_t expected = engine::kquant_encoded_bytes(*type, 1, *numel);
  if (bytes != expected) {
    return "'quantized_data' has " + std::to_string(bytes) + " bytes but shape " + engine::shape_text(shape) + " at " +
           std::to_string(bits) + " bits (kquant: " + type->name + " blocks of 256 values) needs " + std::to_string(expected);
  }
  // The flattened tensor is one row (docs/format.md).
  job->rows = 1;
  job->cols = *numel;
  job->type = type;
  job->rotate = rotation == "hadamard256";
  return "";
}

arrow::Result<const arrow::Array*> integer_column(const arrow::RecordBatch& batch, const char* name,
                                                  std::shared_ptr<arrow::Array>* holder) {
  ARROW_ASSIGN_OR_RAISE(*holder, required_column(batch, name));
  if (!is_integer_type((*holder)->type_id())) {
    return ColumnTypeError(std::string("column '") + name + "' must be an integer column; found " + (*holder)->type()->ToString());
  }
  return holder->get();
}

arrow::Result<std::optional<ListColumn>> float_list_column(const arrow::RecordBatch& batch, const char* name) {
  ARROW_ASSIGN_OR_RAISE(auto array, required_column(batch, name));
  std::optional<ListColumn> list = ListColumn::wrap(array);
  if (!list || list->values()->type_id() != arrow::Type::FLOAT) {
    return ColumnTypeError(std::string("column '") + name + "' must be list<float32>; found " + array->type()->ToString());
  }
  return list;
}

arrow::Result<DequantizeInput> read_dequantize_input(const arrow::RecordBatch& batch) {
  DequantizeInput in;
  ARROW_ASSIGN_OR_RAISE(in.names, required_column(batch, "layer_name"));
  ARROW_RETURN_NOT_OK(check_layer_names(*in.names));
  ARROW_ASSIGN_OR_RAISE(auto data, required_column(batch, "quantized_data"));
  if (data->type_id() != arrow::Type::BINARY && data->type_id() != arrow::Type::LARGE_BINARY) {
    return ColumnTypeError("column 'quantized_data' must be binary or large_binary; found " + data->type()->ToString());
  }
  in.large = data->type_id() == arrow::Type::LARGE_BINARY;
  ARROW_ASSIGN_OR_RAISE(std::optional<ListColumn> scales, float_list_column(batch, "scales"));
  ARROW_ASSIGN_OR_RAISE(std::optional<ListColumn> zero_points, float_list_column(batch, "zero_points"));
  ARROW_ASSIGN_OR_RAISE(std::optional<ListColumn> shapes, shape_column(batch));
  if (!shapes) return SchemaError("column 'shape' is missing (or all null); found columns " + column_names(*batch.schema()));
  std::shared_ptr<arrow::Array> bits_holder, group_holder;
  ARROW_ASSIGN_OR_RAISE(const arrow::Array* bits_column, integer_column(batch, "bit_width", &bits_holder));
  ARROW_ASSIGN_OR_RAISE(const arrow::Array* group_column, integer_column(batch, "group_size", &group_holder));
  // Version 2: a scheme column says how each row is encoded (absent: every row is affine).
  std::shared_ptr<arrow::Array> schemes, rotations;
  if (optional_column(batch, "scheme")) {
    ARROW_ASSIGN_OR_RAISE(schemes, text_column(batch, "scheme"));
    ARROW_ASSIGN_OR_RAISE(rotations, text_column(batch, "rotation"));
  }

  const auto* scale_values = static_cast<const arrow::FloatArray&>(*scales->values()).raw_values();
  const auto* zero_point_values = static_cast<const arrow::FloatArray&>(*zero_points->values()).raw_values();
  for (int64_t i = 0; i < batch.num_rows(); ++i) {
    const std::string label = layer_label(*in.names, i);
    const std::pair<const arrow::Array*, const char*> scalar_columns[] = {
        {data.get(), "quantized_data"}, {bits_column, "bit_width"}, {group_column, "group_size"}};
    for (const auto& [column, name] : scalar_columns) {
      if (column->IsNull(i)) return DataError(label + ": '" + name + "' is null");
    }
    if (scales->is_null(i) || zero_points->is_null(i) || shapes->is_null(i)) {
      return DataError(label + ": 'scales', 'zero_points' and 'shape' must not be null");
    }
    if (scales->first_null_value(i) || zero_points->first_null_value(i)) {
      return DataError(label + ": 'scales' or 'zero_points' contains a null");
    }
    ARROW_ASSIGN_OR_RAISE(std::optional<std::vector<int64_t>> shape, shape_at(shapes, i));
    // Every length is checked against shape and bits before anything is read.
    std::string_view bytes = in.large ? static_cast<const arrow::LargeBinaryArray&>(*data).GetView(i)
                                      : static_cast<const arrow::BinaryArray&>(*data).GetView(i);
    // A null scheme is a version-1 row (as when version-1 and version-2 tables are concatenated).
    if (schemes && !schemes->IsNull(i)) {
      const std::string_view scheme = layer_name_at(*schemes, i);
      if (scheme == "kquant") {
        if (rotations->IsNull(i)) return DataError(label + ": 'rotation' must not be null in a kquant row");
        engine::KquantDecodeJob job;
        if (std::string error = check_kquant_tensor(*shape, integer_at(*bits_column, i), integer_at(*group_column, i),
                                                    layer_name_at(*rotations, i), static_cast<int64_t>(bytes.size()),
                                                    scales->length(i), zero_points->length(i), &job);
            !error.empty()) {
          return DataError(label + ": " + error);
        }
        job.encoded = reinterpret_cast<const uint8_t*>(bytes.data());
        in.kquant_jobs.push_back(job);
        in.row_is_kquant.push_back(true);
        in.numel.push_back(job.rows * job.cols);
        in.shapes.push_back(std::move(*shape));
        continue;
      }
      if (scheme != "affine") return DataError(label + ": scheme must be 'affine' or 'kquant'; found " + quoted(scheme));
    }
    kernels::DequantizeJob job;
    if (std::string error = engine::check_quantized_tensor(*shape, integer_at(*bits_column, i), integer_at(*group_column, i),
                                                           static_cast<int64_t>(bytes.size()), scales->length(i),
                                                           zero_points->length(i), &job);
        !error.empty()) {
      return DataError(label + ": " + error);
    }
    job.packed = reinterpret_cast<const uint8_t*>(bytes.data());
    job.scales = scale_values + scales->offset(i);
    job.zero_points = zero_point_values + zero_points->offset(i);
    in.jobs.push_back(job);
    in.row_is_kquant.push_back(false);
    in.numel.push_back(job.geometry.numel());
    in.shapes.push_back(std::move(*shape));
  }
  return in;
}

template <typename OffsetT>
arrow::Result<ListOutput> allocate_dequantize_output(DequantizeInput& in) {
  ARROW_ASSIGN_OR_RAISE(ListOutput out, allocate_list<OffsetT>(in.numel, sizeof(float), false, "weights"));
  auto* weights = reinterpret_cast<float*>(out.values->mutable_data());
  size_t affine = 0, kquant = 0;
  for (size_t row = 0; row < in.row_is_kquant.size(); ++row) {
    if (in.row_is_kquant[row]) {
      in.kquant_jobs[kquant++].out = weights;
    } else {
      in.jobs[affine++].weights = weights;
    }
    weights += in.numel[row];
  }
  return out;
}

std::shared_ptr<arrow::Schema> make_dequantized_schema(bool large) {
  return arrow::schema({arrow::field("layer_name", arrow::utf8(), false),
                        arrow::field("weights", large ? arrow::large_list(arrow::float32()) : arrow::list(arrow::float32()), false),
                        arrow::field("shape", arrow::list(arrow::int64()), false)});
}

// Schemas are immutable: build each once.
std::shared_ptr<arrow::Schema> dequantized_schema(bool large) {
  static const std::shared_ptr<arrow::Schema> small_schema = make_dequantized_schema(false);
  static const std::shared_ptr<arrow::Schema> large_schema = make_dequantized_schema(true);
  return large ? large_schema : small_schema;
}

std::shared_ptr<arrow::Schema> make_quantized_schema(bool large, bool v2) {
  arrow::FieldVector fields = {arrow::field("layer_name", arrow::utf8(), false),
                        arrow::field("quantized_data", large ? arrow::large_binary() : arrow::binary(), false),
                        arrow::field("scales", arrow::list(arrow::float32()), false),
                        arrow::field("zero_points", arrow::list(arrow::float32()), false),
                        arrow::field("shape", arrow::list(arrow::int64()), false),
                        arrow::field("bit_width", arrow::uint8(), false),
                        arrow::field("group_size", arrow::int32(), false),
                        arrow::field("symmetric", arrow::boolean(), false)};
  if (v2) {
    fields.push_back(arrow::field("scheme", arrow::utf8(), false));
    fields.push_back(arrow::field("rotation", arrow::utf8(), false));
  }
  return arrow::schema(std::move(fields), format_metadata(v2));
}

}  // namespace

arrow::Status validate_quantize_options(const QuantizeOptions& options) {
  if (options.scheme != "affine" && options.scheme != "kquant") {
    return ParameterError("scheme must be 'affine' or 'kquant'; got '" + options.scheme + "'");
  }
  if (is_kquant(options)) {
    if (engine::kquant_type(options.bit_width) == nullptr) {
      return ParameterError("bit_width must be 2, 3, 4, 5, 6 or 8 for scheme 'kquant'; got " + std::to_string(options.bit_width));
    }
  } else if (options.bit_width != 2 && options.bit_width != 4 && options.bit_width != 8) {
    return ParameterError("bit_width must be 2, 4 or 8; got " + std::to_string(options.bit_width));
  }
  const int g = options.group_size;
  if (g < kernels::kMinGroupSize || g > kernels::kMaxGroupSize || (g & (g - 1)) != 0) {
    return ParameterError("group_size must be a power of two from 16 to 4096 (e.g. 32, 64, 128, 256); got " + std::to_string(g));
  }
  if (options.method != "rtn" && options.method != "search") {
    return ParameterError("method must be 'rtn' or 'search'; got '" + options.method + "'");
  }
  if (options.num_threads < 0) {
    return ParameterError("num_threads must be positive (or None for all cores); got " + std::to_string(options.num_threads));
  }
  return arrow::Status::OK();
}

std::shared_ptr<arrow::Schema> quantized_schema(bool large, bool v2) {
  static const std::shared_ptr<arrow::Schema> schemas[2][2] = {
      {make_quantized_schema(false, false), make_quantized_schema(false, true)},
      {make_quantized_schema(true, false), make_quantized_schema(true, true)}};
  return schemas[large][v2];
}

arrow::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> quantize_record_batches(
    const std::vector<std::shared_ptr<arrow::RecordBatch>>& batches, const QuantizeOptions& options,
    std::vector<engine::MarkovSummary>* markov) {
  ARROW_RETURN_NOT_OK(validate_quantize_options(options));
  std::vector<QuantizeInput> inputs;
  inputs.reserve(batches.size());
  for (const auto& batch : batches) {
    ARROW_ASSIGN_OR_RAISE(QuantizeInput in, read_quantize_input(*batch, options));
    inputs.push_back(std::move(in));
  }
  std::vector<QuantizeOutput> outputs;
  std::vector<kernels::QuantizeJob> jobs;
  std::vector<std::pair<size_t, int64_t>> job_origin;  // (batch, row) of each job, for errors
  for (size_t b = 0; b < inputs.size(); ++b) {
    ARROW_ASSIGN_OR_RAISE(QuantizeOutput out, inputs[b].large ? allocate_quantize_output<int64_t>(inputs[b])
                                                               : allocate_quantize_output<int32_t>(inputs[b]));
    outputs.push_back(std::move(out));
    for (size_t r = 0; r < inputs[b].jobs.size(); ++r) {
      jobs.push_back(inputs[b].jobs[r]);
      job_origin.emplace_back(b, static_cast<int64_t>(r));
    }
  }
  std::optional<engine::NonFiniteValue> bad;
  if (is_kquant(options)) {
    const kernels::gguf::TypeTraits* type = engine::kquant_type(options.bit_width);
    std::vector<engine::KquantEncodeJob> kquant_jobs;
    kquant_jobs.reserve(jobs.size());
    for (const kernels::QuantizeJob& job : jobs) {
      // The format's kquant geometry is the flattened tensor as one row (docs/format.md).
      kquant_jobs.push_back({job.weights, job.element_type, 1, job.geometry.numel(), type, options.rotate,
                             options.method == "search", job.packed});
    }
    bad = engine::kquant_encode(kquant_jobs, options.num_threads);
    // No float group parameters: nothing for the smoothness metrics to measure.
    if (markov && !bad) markov->assign(jobs.size(), engine::MarkovSummary{});
  } else {
    bad = engine::quantize_tensors(jobs, options.num_threads, nullptr, markov, options.markov_threshold);
  }
  if (bad) {
    const auto [b, row] = job_origin[static_cast<size_t>(bad->tensor_index)];
    return DataError(layer_label(*inputs[b].names, row) + ": 'weights' contains NaN or infinity at index " +
                     std::to_string(bad->element_index) + "; only finite values can be quantized");
  }
  std::vector<std::shared_ptr<arrow::RecordBatch>> results;
  for (size_t b = 0; b < inputs.size(); ++b) {
    ARROW_ASSIGN_OR_RAISE(auto result, assemble_quantized(inputs[b], outputs[b], options));
    results.push_back(std::move(result));
  }
  return results;
}

arrow::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> dequantize_record_batches(
    const std::vector<std::shared_ptr<arrow::RecordBatch>>& batches, int num_threads) {
  if (num_threads < 0) return ParameterError("num_threads must be positive; got " + std::to_string(num_threads));
  std::vector<DequantizeInput> inputs;
  for (const auto& batch : batches) {
    ARROW_ASSIGN_OR_RAISE(DequantizeInput in, read_dequantize_input(*batch));
    inputs.push_back(std::move(in));
  }
  std::vector<ListOutput> outputs;
  std::vector<kernels::DequantizeJob> jobs;
  std::vector<engine::KquantDecodeJob> kquant_jobs;
  for (auto& in : inputs) {
    ARROW_ASSIGN_OR_RAISE(ListOutput out, in.large ? allocate_dequantize_output<int64_t>(in)
                                                   : allocate_dequantize_output<int32_t>(in));
    outputs.push_back(std::move(out));
    jobs.insert(jobs.end(), in.jobs.begin(), in.jobs.end());
    kquant_jobs.insert(kquant_jobs.end(), in.kquant_jobs.begin(), in.kquant_jobs.end());
  }
  if (!jobs.empty()) engine::dequantize_tensors(jobs, num_threads);
  if (!kquant_jobs.empty()) engine::kquant_decode(kquant_jobs, num_threads);
  std::vector<std::shared_ptr<arrow::RecordBatch>> results;
  for (size_t b = 0; b < inputs.size(); ++b) {
    const DequantizeInput& in = inputs[b];
    const int64_t rows = static_cast<int64_t>(in.row_is_kquant.size());
    ARROW_ASSIGN_OR_RAISE(auto names, names_as_string(in.names));
    ARROW_ASSIGN_OR_RAISE(auto shapes, shapes_array(in.shapes));
    auto weights = list_array(in.large ? arrow::large_list(arrow::float32()) : arrow::list(arrow::float32()),
                              arrow::float32(), rows, outputs[b], sum(in.numel));
    results.push_back(arrow::RecordBatch::Make(dequantized_schema(in.large), rows, {names, weights, shapes}));
  }
  return results;
}

}  // namespace arrowquant::arrow_glue
