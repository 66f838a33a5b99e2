"""Bad input: a clear, typed error naming what is wrong, and nothing partial."""

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_table

import arrowquant as aq
from arrowquant import ArrowQuantError, ColumnTypeError, DataError, ParameterError, SchemaError


def good_table():
    return make_table({"a": np.ones((2, 32), np.float32), "b": np.arange(64, dtype=np.float32)})


def test_hierarchy_matches_python_expectations():
    assert issubclass(ParameterError, ValueError) and issubclass(ParameterError, ArrowQuantError)
    assert issubclass(DataError, ValueError)
    assert issubclass(SchemaError, ValueError)
    assert issubclass(ColumnTypeError, TypeError) and issubclass(ColumnTypeError, SchemaError)


@pytest.mark.parametrize("bits", [0, 1, 3, 16, "4", 4.0, True, None])
def test_bad_bit_width_names_the_parameter(bits):
    with pytest.raises(ParameterError, match="bit_width"):
        aq.ArrowQuantV2().quantize_arrow(good_table(), bit_width=bits)


@pytest.mark.parametrize("group_size", [0, 8, 100, 8192, -128, 1.5])
def test_bad_group_size_names_the_parameter(group_size):
    with pytest.raises(ParameterError, match="group_size"):
        aq.ArrowQuantV2(group_size=group_size)
    with pytest.raises(ParameterError, match="group_size"):
        aq.ArrowQuantV2().quantize_arrow(good_table(), group_size=group_size)


def test_bad_mode_names_the_parameter_and_choices():
    with pytest.raises(ParameterError, match=r"mode.*'diffusion', 'base'.*'fast'"):
        aq.ArrowQuantV2(mode="fast")


@pytest.mark.parametrize("num_threads", [0, -1, 1.5])
def test_bad_num_threads(num_threads):
    with pytest.raises(ParameterError, match="num_threads"):
        aq.ArrowQuantV2(num_threads=num_threads)


def test_core_validates_parameters_too():
    # The compiled layer does not trust the Python layer.
    from arrowquant import _core
    with pytest.raises(ParameterError, match="bit_width must be 2, 4 or 8; got 3"):
        aq._c_data.call_with_batches(_core.quantize_batches, good_table().to_batches(), 3, 128, False, "rtn", 0, 0.3)
    with pytest.raises(ParameterError, match="group_size"):
        aq._c_data.call_with_batches(_core.quantize_batches, good_table().to_batches(), 4, 48, False, "rtn", 0, 0.3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_names_layer_and_index(bad):
    w = np.zeros(300, np.float32)
    w[257] = bad
    t = make_table({"fine": np.ones(10, np.float32), "enc.conv_in.weight": w})
    with pytest.raises(DataError, match=r"layer 'enc.conv_in.weight' \(row 1\).*NaN or infinity at index 257"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_non_finite_float16_is_caught():
    w = np.zeros(40, np.float16)
    w[5] = np.float16(np.inf)
    with pytest.raises(DataError, match="index 5"):
        aq.ArrowQuantV2().quantize_arrow(make_table({"h": w}, float16=True))


def test_first_bad_index_is_reported_when_many():
    w = np.zeros(200_000, np.float32)
    w[[150_000, 70_001, 199_999]] = np.nan
    with pytest.raises(DataError, match="index 70001"):
        aq.ArrowQuantV2(num_threads=2).quantize_arrow(make_table({"big": w}))


def test_null_layer_name():
    t = pa.table({"layer_name": ["a", None], "weights": pa.array([[1.0], [2.0]], pa.list_(pa.float32()))})
    with pytest.raises(DataError, match="'layer_name' is null at row 1"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_null_weights_row_names_the_layer():
    t = pa.table({"layer_name": ["a", "b"], "weights": pa.array([[1.0], None], pa.list_(pa.float32()))})
    with pytest.raises(DataError, match=r"layer 'b' \(row 1\): 'weights' is null"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_null_inside_weights_names_layer_and_index():
    t = pa.table({"layer_name": ["a", "b"], "weights": pa.array([[1.0, 2.0], [3.0, None, 4.0]], pa.list_(pa.float32()))})
    with pytest.raises(DataError, match=r"layer 'b'.*null at index 1"):
        aq.ArrowQuantV2().quantize_arrow(t)


@pytest.mark.parametrize("column", ["layer_name", "weights"])
def test_missing_column_names_it_and_lists_what_was_found(column):
    t = good_table().drop_columns([column])
    with pytest.raises(SchemaError, match=f"column '{column}' is missing; found columns"):
        aq.ArrowQuantV2().quantize_arrow(t)


@pytest.mark.parametrize("weights,found", [
    (pa.array([[1.0, 2.0]], pa.list_(pa.float64())), "list<item: double>"),
    (pa.array([[1, 2]], pa.list_(pa.int32())), "list<item: int32>"),
    (pa.array([1.0], pa.float32()), "float"),
    (pa.array(["x"], pa.string()), "string"),
])
def test_wrong_weights_type_names_column_and_type(weights, found):
    t = pa.table({"layer_name": ["a"], "weights": weights})
    with pytest.raises(ColumnTypeError, match=f"column 'weights' must be .*float32 or float16; found {found}"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_wrong_layer_name_type():
    t = pa.table({"layer_name": [1], "weights": pa.array([[1.0]], pa.list_(pa.float32()))})
    with pytest.raises(ColumnTypeError, match="column 'layer_name' must be string or large_string; found int64"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_wrong_shape_type():
    t = good_table().set_column(2, "shape", pa.array([["2", "32"], ["64"]]))
    with pytest.raises(ColumnTypeError, match="column 'shape'"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_shape_product_mismatch_names_layer_and_both_numbers():
    t = good_table().set_column(2, "shape", pa.array([[2, 32], [8, 9]], pa.list_(pa.int64())))
    with pytest.raises(DataError, match=r"layer 'b' \(row 1\): shape \[8, 9\] has 72 elements but 'weights' has 64"):
        aq.ArrowQuantV2().quantize_arrow(t)


@pytest.mark.parametrize("shape", [[-1, -64], [2**40, 2**40, 2**40]])
def test_negative_or_overflowing_shape(shape):
    t = good_table().set_column(2, "shape", pa.array([[2, 32], shape], pa.list_(pa.int64())))
    with pytest.raises(DataError, match="negative dimension or more elements than fit in 64 bits"):
        aq.ArrowQuantV2().quantize_arrow(t)


def test_not_a_table():
    with pytest.raises(ColumnTypeError, match="got dict"):
        aq.ArrowQuantV2().quantize_arrow({"layer_name": ["a"]})
    with pytest.raises(ColumnTypeError, match="quantize_arrow_batch takes one record batch; got Table"):
        aq.ArrowQuantV2().quantize_arrow_batch(good_table())


def quantized():
    return aq.ArrowQuantV2(group_size=32).quantize_arrow(good_table(), bit_width=4)


def test_dequantize_rejects_short_quantized_data_naming_the_layer():
    out = quantized()
    data = out.column("quantized_data").to_pylist()
    data[1] = data[1][:-1]
    bad = out.set_column(1, "quantized_data", pa.array(data, pa.binary()))
    with pytest.raises(DataError, match=r"layer 'b' \(row 1\): 'quantized_data' has 31 bytes but shape \[64\] at 4 bits needs 32"):
        aq.ArrowQuantV2().dequantize_arrow(bad)


def test_dequantize_rejects_wrong_number_of_scales():
    out = quantized()
    scales = out.column("scales").to_pylist()
    scales[0] = scales[0][:-1]
    bad = out.set_column(2, "scales", pa.array(scales, pa.list_(pa.float32())))
    with pytest.raises(DataError, match=r"layer 'a'.*has 2 groups but 'scales' has 1"):
        aq.ArrowQuantV2().dequantize_arrow(bad)


def test_dequantize_rejects_bad_bit_width_and_group_size():
    out = quantized()
    bad = out.set_column(5, "bit_width", pa.array([4, 3], pa.uint8()))
    with pytest.raises(DataError, match="bit_width must be 2, 4 or 8; found 3"):
        aq.ArrowQuantV2().dequantize_arrow(bad)
    bad = out.set_column(6, "group_size", pa.array([32, 0], pa.int32()))
    with pytest.raises(DataError, match="group_size must be a power of two.*found 0"):
        aq.ArrowQuantV2().dequantize_arrow(bad)


def test_dequantize_rejects_a_shape_that_lies():
    out = quantized()
    bad = out.set_column(4, "shape", pa.array([[2, 32], [2**62, 4]], pa.list_(pa.int64())))
    with pytest.raises(DataError, match="layer 'b'"):
        aq.ArrowQuantV2().dequantize_arrow(bad)


def test_dequantize_missing_column():
    with pytest.raises(SchemaError, match="column 'scales' is missing"):
        aq.ArrowQuantV2().dequantize_arrow(quantized().drop_columns(["scales"]))


def test_error_leaves_no_output_and_engine_still_works():
    w = np.zeros(64, np.float32)
    w[3] = np.nan
    q = aq.ArrowQuantV2()
    result = None
    with pytest.raises(DataError):
        result = q.quantize_arrow(make_table({"ok": np.ones(64, np.float32), "bad": w}))
    assert result is None
    assert q.quantize_arrow(good_table()).num_rows == 2


@pytest.mark.parametrize("group_size", [16, 32, 64, 128])
@pytest.mark.parametrize("float16", [False, True])
def test_non_finite_inside_runs_of_whole_groups_is_reported_exactly(simd_path, group_size, float16):
    """Tensors whose rows are whole groups are quantized 16 groups at a time; a NaN or infinity
    anywhere in such a run is still reported at its own index, on every SIMD path."""
    rng = np.random.default_rng(group_size)
    for index in (0, 5, 16 * group_size - 1, 16 * group_size + 3, 33 * group_size + 7):
        w = rng.standard_normal((8, 8 * group_size)).astype(np.float16 if float16 else np.float32)
        w.reshape(-1)[index] = np.inf if index % 2 else np.nan
        with pytest.raises(DataError, match=rf"index {index}\b"):
            aq.ArrowQuantV2(group_size=group_size).quantize_arrow(make_table({"w": w}, float16=float16))
