"""Fuzzing every parser of untrusted input (hypothesis, bounded for CI; longer runs: fuzz/).

Every input must end in a correct result or a clean ArrowQuantError: never a crash, a hang, or
a result read from outside the input's buffers."""

import json
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from reference import decode
from safetensors.numpy import save_file

import arrowquant as aq
from arrowquant.aq_file import AQ_SCHEMA

# ARROWQUANT_FUZZ_EXAMPLES raises the budget for a longer run by hand (CI: 120 per test).
FUZZ = settings(max_examples=int(os.environ.get("ARROWQUANT_FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- Arrow import path -------------------------------------------------------------------------------

value_types = st.sampled_from([pa.float32(), pa.float16(), pa.float64(), pa.int32(), pa.string(), pa.null()])


@st.composite
def arrow_columns(draw):
    """A weights column of a random layout: lists of random value types, nested lists, nulls,
    slices, empty lists, and raw offsets that may lie."""
    n = draw(st.integers(0, 5))
    kind = draw(st.sampled_from(["list", "large_list", "fixed", "nested", "plain", "lying_offsets"]))
    vt = draw(value_types)
    lengths = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    total = sum(lengths)
    if vt in (pa.float32(), pa.float16(), pa.float64()):
        values = pa.array(np.linspace(-1, 1, total).astype(vt.to_pandas_dtype()), vt)
    elif vt == pa.int32():
        values = pa.array(np.arange(total, dtype=np.int32))
    elif vt == pa.string():
        values = pa.array([str(i) for i in range(total)])
    else:
        values = pa.nulls(total)
    if draw(st.booleans()) and total:  # a null inside the values
        mask = np.zeros(total, bool)
        mask[draw(st.integers(0, total - 1))] = True
        values = pa.array(values.to_numpy(zero_copy_only=False), values.type, mask=mask) if vt != pa.null() else values
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if kind == "list":
        col = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    elif kind == "large_list":
        col = pa.LargeListArray.from_arrays(pa.array(offsets), values)
    elif kind == "fixed":
        size = draw(st.integers(1, 8))
        col = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * size, np.float32)), size)
    elif kind == "nested":
        inner = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
        col = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), inner) if n else pa.array([], pa.list_(inner.type))
    elif kind == "plain":
        col = values.slice(0, n)
    else:
        lie = draw(st.lists(st.integers(-5, 10**6), min_size=n + 1, max_size=n + 1))
        try:  # pyarrow checks the first and last offsets itself; the middle ones may lie
            col = pa.Array.from_buffers(pa.list_(values.type), n, [None, pa.array(lie, pa.int32()).buffers()[1]],
                                        children=[values])
        except pa.ArrowInvalid:
            assume(False)
    if draw(st.booleans()) and len(col) > 1:
        col = col.slice(1)
    return col


@FUZZ
@given(weights=arrow_columns(), bits=st.sampled_from([2, 4, 8]), name_null=st.booleans(),
       with_shape=st.booleans())
def test_fuzzed_arrow_inputs_give_results_or_clean_errors(weights, bits, name_null, with_shape):
    n = len(weights)
    names = pa.array([None if name_null and i == 0 else f"l{i}" for i in range(n)], pa.string())
    columns = {"layer_name": names, "weights": weights}
    if with_shape:
        columns["shape"] = pa.array([[7, -1] if i == 1 else None for i in range(n)], pa.list_(pa.int64()))
    table = pa.table(columns)
    try:
        out = aq.ArrowQuantV2(group_size=16).quantize_arrow(table, bits)
    except aq.ArrowQuantError:
        return
    # Accepted: every row must decode to values of the right length from our own buffers.
    for i in range(out.num_rows):
        decoded = decode(out.column("quantized_data")[i].as_py(), out.column("scales")[i].as_py(),
                         out.column("zero_points")[i].as_py(), out.column("shape")[i].as_py(), bits, 16)
        source = weights[i].values.to_numpy(zero_copy_only=False).astype(np.float32)
        assert decoded.size == source.size
        assert np.all(np.abs(decoded.reshape(-1) - source) <= np.abs(source).max(initial=0) + 1e-6)


def test_regression_lying_list_offsets_are_refused():
    """A producer's list offsets pointing past the values were trusted (an out-of-bounds read)."""
    values = pa.array(np.arange(8, dtype=np.float32))
    for lie in ([0, 1_000_000, 8], [0, 9, 3, 8], [0, -4, 8]):
        weights = pa.Array.from_buffers(pa.list_(pa.float32()), len(lie) - 1,
                                        [None, pa.array(lie, pa.int32()).buffers()[1]], children=[values])
        with pytest.raises(aq.DataError, match="malformed"):
            aq.ArrowQuantV2().quantize_arrow(pa.table({"layer_name": [f"l{i}" for i in range(len(weights))],
                                                      "weights": weights}))


# -- .aq reader ----------------------------------------------------------------------------------

def write_aq(path, rows, metadata=None):
    meta = {b"arrowquant.format": b"arrowquant.aq", b"arrowquant.format_version": b"1", b"arrowquant.settings": b"{}"}
    meta.update(metadata or {})
    schema = AQ_SCHEMA.with_metadata(meta)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for row in rows:
            writer.write_batch(pa.RecordBatch.from_pylist([row], schema=schema))


def aq_row(**overrides):
    row = {"layer_name": "w", "quantized_data": bytes(8), "scales": [1.0], "zero_points": [0.0], "shape": [16],
           "bit_width": 4, "group_size": 16, "symmetric": False, "source_dtype": "F32"}
    row.update(overrides)
    return row


@FUZZ
@given(data_len=st.integers(0, 40), scales=st.integers(0, 4), shape=st.lists(st.integers(-3, 2**40), max_size=4),
       bits=st.sampled_from([0, 2, 3, 4, 8, 16, 255]), group=st.sampled_from([0, 8, 16, 64, 3000, 2**30]),
       dtype=st.sampled_from(["F32", "BF16", "I64", "XX"]))
def test_fuzzed_aq_layers_decode_correctly_or_fail_cleanly(tmp_path_factory, data_len, scales, shape, bits, group, dtype):
    path = tmp_path_factory.mktemp("aq") / "f.aq"
    write_aq(path, [aq_row(quantized_data=bytes(range(data_len)), scales=[0.5] * scales, zero_points=[1.0] * scales,
                           shape=shape, bit_width=bits, group_size=group, source_dtype=dtype)])
    try:
        with aq.open(path) as f:
            out = f.dequantize("w")
    except (aq.ArrowQuantError, KeyError):
        return
    numel = int(np.prod(shape)) if shape else 1
    assert out.size == numel  # a result is only ever returned for a layer whose lengths all agree


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6),
       cut=st.integers(0, 200))
@example(flips=[(12298, 1)], cut=0)  # found: a flipped schema bit raised ArrowNotImplementedError, uncaught
@example(flips=[(31220, 128)], cut=0)  # found: a column name that is no longer UTF-8 (UnicodeDecodeError)
def test_bit_flipped_and_truncated_aq_files_never_crash(tmp_path_factory, flips, cut):
    tmp = tmp_path_factory.mktemp("aqflip")
    save_file({"a": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32),
               "b": np.arange(10, dtype=np.int64)}, str(tmp / "m.safetensors"))
    # "a" quantized although small (a run that quantizes nothing is refused), "b" carried
    aq.ArrowQuantV2().quantize_from_safetensors(tmp / "m.safetensors", tmp / "m.aq", include=["a"])
    data = bytearray((tmp / "m.aq").read_bytes())
    for position, xor in flips:
        data[position % len(data)] ^= xor
    if cut:
        del data[len(data) - min(cut, len(data) - 1):]
    (tmp / "m.aq").write_bytes(bytes(data))
    try:
        with aq.open(tmp / "m.aq") as f:
            for name in f.layer_names:
                f.dequantize(name)
            f.to_safetensors(tmp / "back.safetensors")
    except (aq.ArrowQuantError, KeyError):
        assert not (tmp / ".back.safetensors.partial").exists()


def test_absurd_shapes_are_refused_before_any_allocation(tmp_path):
    for shape in ([2**62, 2**62], [2**63 - 1, 2], [-1, 16]):
        write_aq(tmp_path / "f.aq", [aq_row(shape=shape)])
        with aq.open(tmp_path / "f.aq") as f, pytest.raises(aq.DataError, match="64 bits|invalid shape|negative"):
            f.dequantize("w")


def test_wrong_format_metadata_is_refused(tmp_path):
    write_aq(tmp_path / "f.aq", [aq_row()], {b"arrowquant.format": b"something.else"})
    with pytest.raises(aq.FileFormatError, match="not an arrowquant .aq file"):
        aq.open(tmp_path / "f.aq")
    write_aq(tmp_path / "g.aq", [aq_row()], {b"arrowquant.format_version": b"99"})
    with pytest.raises(aq.FileFormatError, match="version"):
        aq.open(tmp_path / "g.aq")


# -- safetensors headers, structurally ---------------------------------------------------------------

entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "Q4", 7]),
    "shape": st.one_of(st.lists(st.integers(-2, 40), max_size=3), st.just("x"), st.lists(st.integers(2**31, 2**62), max_size=2)),
    "data_offsets": st.one_of(st.lists(st.integers(-8, 4000), min_size=2, max_size=2), st.just([0]), st.none()),
})


@FUZZ
@given(header=st.dictionaries(st.text("abcdefgh.", min_size=1, max_size=8), entries, max_size=4),
       data_len=st.integers(0, 4000), length_lie=st.integers(-16, 16))
def test_structured_safetensors_headers(tmp_path_factory, header, data_len, length_lie):
    import safetensors
    tmp = tmp_path_factory.mktemp("st")
    raw = json.dumps(header).encode()
    path = tmp / "m.safetensors"
    path.write_bytes(struct.pack("<Q", max(0, len(raw) + length_lie)) + raw + bytes(data_len))
    try:
        report = aq.ArrowQuantV2().quantize_from_safetensors(path, tmp / "o.aq")
    except aq.ArrowQuantError:
        assert not (tmp / "o.aq").exists()
        return
    # Accepted: the reference implementation must accept it too, and agree on every tensor.
    reference = dict(safetensors.deserialize(path.read_bytes()))
    assert report["layers_quantized"] + report["layers_carried"] == len(reference)


def test_regression_zero_size_shape_with_huge_dimensions(tmp_path):
    """[0, 1.5e9, 1.5e9] has no elements, but NumPy refuses the shape: that was a raw ValueError."""
    for quantized in (True, False):
        row = aq_row(quantized_data=b"", scales=[], zero_points=[], shape=[0, 1_518_494_220, 1_518_506_280])
        if not quantized:
            row.update(bit_width=32, group_size=0)
        write_aq(tmp_path / "f.aq", [row])
        with aq.open(tmp_path / "f.aq") as f, pytest.raises(aq.ArrowQuantError, match="64 bits"):
            f.dequantize("w")


def test_regression_aq_views_are_read_only(tmp_path):
    """NumPy views over the read-only .aq mapping were writeable: a write would crash the process."""
    save_file({"w": np.ones((16, 128), np.float32)}, str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    with aq.open(tmp_path / "m.aq") as f:
        t = f.tensor("w")
        with pytest.raises(ValueError, match="read-only"):
            t.quantized_data[0] = 1


def test_regression_corrupt_record_batch_is_refused_not_a_crash(tmp_path):
    """A .aq record batch whose binary offsets lie made pyarrow abort the process on access."""
    data = pa.Array.from_buffers(pa.large_binary(), 2, [None, pa.array([0, 10**6, 8], pa.int64()).buffers()[1],
                                                        pa.py_buffer(bytes(8))])
    columns = [pa.array(["a", "b"]), data, pa.array([[1.0], [1.0]], pa.list_(pa.float32())),
               pa.array([[0.0], [0.0]], pa.list_(pa.float32())), pa.array([[16], [16]], pa.list_(pa.int64())),
               pa.array([4, 4], pa.uint8()), pa.array([16, 16], pa.int32()), pa.array([False, False]),
               pa.array(["F32", "F32"])]
    schema = AQ_SCHEMA.with_metadata({b"arrowquant.format": b"arrowquant.aq", b"arrowquant.format_version": b"1"})
    with pa.OSFile(str(tmp_path / "lie.aq"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    with pytest.raises(aq.FileFormatError, match="record batch 0 is corrupt"):
        aq.open(tmp_path / "lie.aq")


def test_regression_safetensors_holes_are_refused(tmp_path):
    """Bytes belonging to no tensor (a polyglot payload) were accepted; the format forbids them."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(aq.FileFormatError, match=r"bytes \[0, 8\) of the data area belong to no tensor"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")


# -- SentencePiece model files (tokenizer.model, a protocol buffer) ---------------------------------


def _pb_varint(v):
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _pb_field(number, wire, payload):
    key = _pb_varint(number << 3 | wire)
    return key + (_pb_varint(len(payload)) + payload if wire == 2 else payload)


def _sentencepiece_bytes(pieces):
    body = b"".join(_pb_field(1, 2, _pb_field(1, 2, p.encode()) + _pb_field(2, 5, struct.pack("<f", -i))
                              + _pb_field(3, 0, _pb_varint(1))) for i, p in enumerate(pieces))
    return body + _pb_field(2, 2, _pb_field(3, 0, _pb_varint(2)) + _pb_field(35, 0, _pb_varint(1)))


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 10**4), pieces=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8))
def test_fuzzed_sentencepiece_models_read_or_fail_cleanly(tmp_path_factory, flips, cut, pieces):
    """Our reader of tokenizer.model (written from sentencepiece_model.proto): a well-formed file
    reads back its pieces; any damage is a FileFormatError naming the file, never another error."""
    from arrowquant.errors import FileFormatError
    from arrowquant.gguf.sentencepiece import BPE, read_sentencepiece_model
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    good = _sentencepiece_bytes(pieces)
    path.write_bytes(good)
    model = read_sentencepiece_model(path)
    assert [p for p, _, _ in model.pieces] == pieces and model.model_type == BPE and model.byte_fallback
    assert [s for _, s, _ in model.pieces] == [-float(i) for i in range(len(pieces))]
    data = bytearray(good[:cut] if cut < len(good) else good)
    for at, value in flips:
        if data:
            data[at % len(data)] = value
    path.write_bytes(bytes(data))
    try:
        read_sentencepiece_model(path)
    except FileFormatError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize("column", ["bit_width", "group_size", "symmetric"])
def test_regression_a_null_parameter_column_is_a_format_error(tmp_path, column):
    write_aq(tmp_path / "f.aq", [aq_row(**{column: None})])
    with aq.open(tmp_path / "f.aq") as f, pytest.raises(aq.FileFormatError, match=f"layer 'w': {column} is null"):
        f.dequantize("w")


def test_regression_an_aq_file_truncated_while_open_is_an_error_not_sigbus(tmp_path):
    """Round one left this: GGUF files re-checked their size before each tensor, .aq files did not."""
    import subprocess
    import sys
    import textwrap
    rng = np.random.default_rng(0)
    layers = {f"w{i}": rng.standard_normal((256, 1024)).astype(np.float32) for i in range(4)}
    from safetensors.numpy import save_file
    save_file(layers, str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    script = textwrap.dedent(f"""
        import os, arrowquant as aq
        f = aq.open({str(tmp_path / 'm.aq')!r})
        os.truncate({str(tmp_path / 'm.aq')!r}, os.path.getsize({str(tmp_path / 'm.aq')!r}) // 3)
        for name in f.layer_names:
            f.dequantize(name)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 1, (r.returncode, r.stderr)  # SIGBUS is -7
    assert "the file shrank from" in r.stderr.strip().splitlines()[-1]
