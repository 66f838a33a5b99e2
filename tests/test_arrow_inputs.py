"""The Arrow side: every accepted input layout, zero-copy views, schemas, chunking."""

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_table
from reference import decode_row, encode

import arrowquant as aq


def layers(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {f"block.{i}.weight": rng.standard_normal((4 + i, 40 + 3 * i)).astype(np.float32) for i in range(n)}


def assert_matches_reference(out, named_arrays, bits=4, group_size=128, symmetric=False):
    assert out.num_rows == len(named_arrays)
    for i, (name, w) in enumerate(named_arrays.items()):
        assert out.column("layer_name")[i].as_py() == name
        packed, scales, _ = encode(w, bits, group_size, symmetric)
        assert out.column("quantized_data")[i].as_py() == packed, name
        assert np.array_equal(np.array(out.column("scales")[i].as_py(), np.float32), scales)


def test_output_schema_types_and_metadata():
    out = aq.ArrowQuantV2().quantize_arrow(make_table(layers()), bit_width=4)
    s = out.schema
    assert s.field("layer_name").type == pa.string()
    assert s.field("quantized_data").type == pa.binary()
    assert s.field("scales").type == pa.list_(pa.float32())
    assert s.field("zero_points").type == pa.list_(pa.float32())
    assert s.field("shape").type == pa.list_(pa.int64())
    assert s.field("bit_width").type == pa.uint8()
    assert s.field("group_size").type == pa.int32()
    assert s.field("symmetric").type == pa.bool_()
    assert s.metadata[b"arrowquant.format"] == b"arrowquant.packed"
    assert s.metadata[b"arrowquant.format_version"] == b"1"
    assert out.column("bit_width").to_pylist() == [4, 4, 4]
    assert out.column("group_size").to_pylist() == [128, 128, 128]


def test_per_call_overrides_of_group_size_and_symmetric():
    q = aq.ArrowQuantV2(group_size=128, symmetric=False)
    named = layers()
    out = q.quantize_arrow(make_table(named), bit_width=2, group_size=32, symmetric=True)
    assert_matches_reference(out, named, bits=2, group_size=32, symmetric=True)
    assert out.column("group_size").to_pylist() == [32] * 3
    assert q.group_size == 128 and q.symmetric is False


def test_missing_shape_column_means_one_dimension():
    named = layers()
    out = aq.ArrowQuantV2().quantize_arrow(make_table(named, with_shape=False))
    assert out.column("shape").to_pylist() == [[w.size] for w in named.values()]
    assert_matches_reference(out, {k: v.reshape(-1) for k, v in named.items()})


def test_null_shape_rows_mean_one_dimension():
    named = layers(2)
    t = make_table(named).set_column(2, "shape", pa.array([[4, 40], None], pa.list_(pa.int64())))
    out = aq.ArrowQuantV2().quantize_arrow(t)
    assert out.column("shape").to_pylist() == [[4, 40], [5 * 43]]


@pytest.mark.parametrize("list_type", ["list", "large_list", "fixed_size_list"])
@pytest.mark.parametrize("name_type", [pa.string(), pa.large_string()])
def test_list_layouts_and_string_types(list_type, name_type):
    rng = np.random.default_rng(2)
    named = {f"l{i}": rng.standard_normal((3, 64)).astype(np.float32) for i in range(3)}
    flat = pa.array(np.concatenate([w.reshape(-1) for w in named.values()]), pa.float32())
    if list_type == "list":
        weights = pa.ListArray.from_arrays(pa.array([0, 192, 384, 576], pa.int32()), flat)
    elif list_type == "large_list":
        weights = pa.LargeListArray.from_arrays(pa.array([0, 192, 384, 576], pa.int64()), flat)
    else:
        weights = pa.FixedSizeListArray.from_arrays(flat, 192)
    t = pa.table({"layer_name": pa.array(list(named), name_type), "weights": weights,
                  "shape": [[3, 64]] * 3})
    out = aq.ArrowQuantV2(group_size=64).quantize_arrow(t)
    expected_binary = pa.large_binary() if list_type == "large_list" else pa.binary()
    assert out.schema.field("quantized_data").type == expected_binary
    assert out.schema.field("layer_name").type == pa.string()
    assert_matches_reference(out, named, group_size=64)
    back = aq.ArrowQuantV2().dequantize_arrow(out)
    expected_list = pa.large_list(pa.float32()) if list_type == "large_list" else pa.list_(pa.float32())
    assert back.schema.field("weights").type == expected_list


def test_sliced_arrays_with_nonzero_offsets():
    named = layers(6)
    t = make_table(named).slice(2, 3)
    # Slice the values child too: a list array whose child starts mid-buffer.
    batch = t.to_batches()[0]
    out = aq.ArrowQuantV2().quantize_arrow_batch(batch)
    expected = dict(list(named.items())[2:5])
    assert_matches_reference(pa.Table.from_batches([out]), expected)


def test_list_whose_values_child_is_itself_sliced():
    rng = np.random.default_rng(9)
    values = pa.array(rng.standard_normal(1000).astype(np.float32)).slice(100, 600)
    weights = pa.ListArray.from_arrays(pa.array([0, 200, 600], pa.int32()), values)
    t = pa.table({"layer_name": ["x", "y"], "weights": weights})
    out = aq.ArrowQuantV2(group_size=32).quantize_arrow(t)
    v = np.asarray(values)
    assert_matches_reference(out, {"x": v[:200], "y": v[200:600]}, group_size=32)


def test_multi_chunk_table_keeps_row_order_and_chunks():
    named = layers(7)
    t = make_table(named)
    chunked = pa.concat_tables([t.slice(0, 2), t.slice(2, 4), t.slice(6, 1)])
    assert chunked.column("weights").num_chunks == 3
    out = aq.ArrowQuantV2().quantize_arrow(chunked)
    assert out.column("quantized_data").num_chunks == 3
    assert_matches_reference(out, named)


class CapsuleOnlyStream:
    """A producer that speaks only the Arrow PyCapsule stream protocol (as polars or DuckDB do)."""

    def __init__(self, table):
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


class CapsuleOnlyArray:
    def __init__(self, batch):
        self._batch = batch

    def __arrow_c_array__(self, requested_schema=None):
        return self._batch.__arrow_c_array__(requested_schema)


def test_pycapsule_stream_producer_is_accepted():
    named = layers()
    out = aq.ArrowQuantV2().quantize_arrow(CapsuleOnlyStream(make_table(named)))
    assert_matches_reference(out, named)


def test_pycapsule_array_producer_is_accepted_as_a_batch():
    named = layers()
    out = aq.ArrowQuantV2().quantize_arrow_batch(CapsuleOnlyArray(make_table(named).to_batches()[0]))
    assert isinstance(out, pa.RecordBatch)
    assert_matches_reference(pa.Table.from_batches([out]), named)


def test_dequantize_accepts_a_pycapsule_producer():
    named = layers()
    q = aq.ArrowQuantV2()
    out = q.quantize_arrow(make_table(named))
    back = q.dequantize_arrow(CapsuleOnlyStream(out))
    assert np.array_equal(np.array(back.column("weights")[0].values), decode_row(out, 0).reshape(-1))


def test_empty_table_returns_empty_table_with_full_schema():
    empty = make_table(layers()).slice(0, 0)
    out = aq.ArrowQuantV2().quantize_arrow(empty)
    assert out.num_rows == 0
    assert out.column_names == ["layer_name", "quantized_data", "scales", "zero_points", "shape", "bit_width",
                                "group_size", "symmetric"]
    no_batches = pa.Table.from_batches([], schema=make_table(layers()).schema)
    assert aq.ArrowQuantV2().quantize_arrow(no_batches).schema.equals(out.schema)


def test_hundred_layer_table():
    rng = np.random.default_rng(11)
    named = {f"layer.{i:03d}": rng.standard_normal(1000).astype(np.float32) for i in range(100)}
    out = aq.ArrowQuantV2().quantize_arrow(make_table(named), bit_width=4)
    assert out.column("layer_name").to_pylist() == list(named)
    assert_matches_reference(out, named)


def test_quantize_does_not_modify_or_copy_the_input():
    named = layers()
    t = make_table(named)
    before = {k: v.copy() for k, v in named.items()}
    pool_before = pa.total_allocated_bytes()
    out = aq.ArrowQuantV2().quantize_arrow(t, bit_width=8)
    # The output needs ~numel bytes at 8 bits plus scales; a float32 copy of the input would need 4x that.
    input_bytes = sum(w.nbytes for w in named.values())
    assert pa.total_allocated_bytes() - pool_before < input_bytes * 0.5 + 65536
    for i, (name, w) in enumerate(before.items()):
        assert np.array_equal(np.array(t.column("weights")[i].values, np.float32), w.reshape(-1))
    del out
