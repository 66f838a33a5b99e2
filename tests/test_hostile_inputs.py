"""Inputs from other tools and from hostile files: a clear one-line error (or it works), never a traceback,
a crash, or a file our own reader refuses. Plus what the process must survive."""

import gc
import json
import os
import struct
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import save_file

import arrowquant as aq
from arrowquant.errors import ColumnTypeError, DataError, FileFormatError

from conftest import make_table


def layers(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {f"layer{i}": rng.standard_normal((16, 64)).astype(np.float32) for i in range(n)}


def reference_codes(table):
    return aq.ArrowQuantV2().quantize_arrow(table, 4, group_size=32).column("quantized_data").to_pylist()


# -- real producers ------------------------------------------------------------------------------------

def test_polars_dataframes_quantize_as_is():
    pl = pytest.importorskip("polars")
    data = layers()
    df = pl.DataFrame({"layer_name": list(data), "weights": [a.reshape(-1) for a in data.values()],
                       "shape": [list(a.shape) for a in data.values()]})
    assert pa.types.is_string_view(pa.table(df).schema.field("layer_name").type)  # what polars exports
    out = aq.ArrowQuantV2().quantize_arrow(df, 4, group_size=32)
    assert out.column("quantized_data").to_pylist() == reference_codes(make_table(data))
    back = aq.dequantize(pl.from_arrow(out))  # and polars holding the quantized table
    assert back.column("layer_name").to_pylist() == list(data)


def test_duckdb_results_quantize():
    duckdb = pytest.importorskip("duckdb")
    data = layers()
    con = duckdb.connect()
    con.register("src", make_table(data))
    result = con.sql("SELECT layer_name, weights, shape FROM src ORDER BY layer_name").arrow()
    out = aq.ArrowQuantV2().quantize_arrow(result, 4, group_size=32)
    assert out.column("quantized_data").to_pylist() == reference_codes(make_table(data))


def test_nanoarrow_stream_quantizes():
    na = pytest.importorskip("nanoarrow")
    data = layers()
    stream = na.ArrayStream(make_table(data))  # a producer that is not pyarrow, through __arrow_c_stream__
    out = aq.ArrowQuantV2().quantize_arrow(stream, 4, group_size=32)
    assert out.column("quantized_data").to_pylist() == reference_codes(make_table(data))


def test_view_layouts_are_accepted():
    data = layers()
    table = make_table(data)
    flat = [a.reshape(-1) for a in data.values()]
    values = pa.array(np.concatenate(flat[::-1]))  # views out of order: gathered
    sizes = np.array([a.size for a in flat], np.int32)
    offsets = np.array([sizes[2] + sizes[1], sizes[2], 0], np.int32)
    views = pa.ListViewArray.from_arrays(pa.array(offsets), pa.array(sizes), values)
    viewed = pa.table({"layer_name": pa.array(list(data), pa.string_view()), "weights": views,
                       "shape": table.column("shape")})
    out = aq.ArrowQuantV2().quantize_arrow(viewed, 4, group_size=32)
    assert out.column("quantized_data").to_pylist() == reference_codes(table)


def test_float64_weights_say_cast_to_float32():
    table = pa.table({"layer_name": ["a"], "weights": pa.array([np.ones(64)], pa.list_(pa.float64()))})
    with pytest.raises(ColumnTypeError, match="float64.*cast it to float32"):
        aq.ArrowQuantV2().quantize_arrow(table)


def test_aq_file_read_with_plain_pyarrow_dequantizes(tmp_path):
    tensors = {"w": np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32),
               "bias": np.arange(32, dtype=np.float32), "ids": np.arange(5, dtype=np.int64)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    table = pa.ipc.open_file(tmp_path / "m.aq").read_all()
    assert sorted(set(table.column("bit_width").to_pylist())) == [4, 32, 64]
    back = aq.dequantize(table)
    rows = dict(zip(back.column("layer_name").to_pylist(), back.column("weights").to_pylist()))
    assert rows["bias"] == list(range(32)) and rows["ids"] == list(range(5))
    assert np.allclose(rows["w"], aq.open(tmp_path / "m.aq").dequantize("w").reshape(-1))
    assert back.column("layer_name").to_pylist() == table.column("layer_name").to_pylist()


# -- hostile files -------------------------------------------------------------------------------------

def raw_safetensors(path, header, data=b""):
    blob = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_deeply_nested_json_is_a_format_error(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    raw_safetensors(tmp_path / "m.safetensors", b'{"__metadata__": ' + deep + b"}")
    with pytest.raises(FileFormatError, match="m.safetensors: .*nested too deeply|m.safetensors: .*JSON"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "o.aq")
    (tmp_path / "i.safetensors.index.json").write_bytes(b'{"weight_map": ' + deep + b"}")
    with pytest.raises(FileFormatError, match="i.safetensors.index.json: .*nested too deeply"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "i.safetensors.index.json", tmp_path / "o.aq")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_bytes(deep)
    with pytest.raises(FileFormatError, match="model_index.json: .*nested too deeply"):
        aq.quantize_diffusion_model(model, tmp_path / "out")


def test_deeply_nested_aq_metadata_is_a_format_error(tmp_path):
    save_file({"w": np.ones((32, 64), np.float32)}, str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    table = pa.ipc.open_file(tmp_path / "m.aq").read_all()
    meta = dict(table.schema.metadata)
    meta[b"arrowquant.settings"] = b"[" * 100_000 + b"]" * 100_000
    with pa.OSFile(str(tmp_path / "deep.aq"), "wb") as sink, pa.ipc.new_file(sink, table.schema.with_metadata(meta)) as w:
        w.write_table(table)
    with pytest.raises(FileFormatError, match="deep.aq: metadata"):
        aq.open(tmp_path / "deep.aq")


def test_lone_surrogate_tensor_name_is_a_format_error(tmp_path):
    header = '{"bad\\ud800name": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'.encode()
    raw_safetensors(tmp_path / "m.safetensors", header, b"\0" * 4)
    with pytest.raises(FileFormatError, match="m.safetensors: tensor name .*lone surrogate"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "o.aq")


def test_aq_columns_with_the_right_names_and_other_types_are_refused(tmp_path):
    save_file({"w": np.ones((32, 64), np.float32)}, str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    table = pa.ipc.open_file(tmp_path / "m.aq").read_all()
    bad = table.set_column(table.schema.get_field_index("bit_width"), "bit_width", pa.array(["4"]))
    with pa.OSFile(str(tmp_path / "bad.aq"), "wb") as sink, pa.ipc.new_file(sink, bad.schema) as w:
        w.write_table(bad)
    with pytest.raises(FileFormatError, match="bad.aq: column 'bit_width' has type string; expected uint8"):
        aq.open(tmp_path / "bad.aq")
    r = subprocess.run([sys.executable, "-m", "arrowquant", "inspect", tmp_path / "bad.aq"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_zero_element_tensor_with_an_absurd_shape_never_becomes_an_unreadable_file(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]},
              "ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw_safetensors(tmp_path / "m.safetensors", header, b"\0" * 4)
    with pytest.raises(FileFormatError, match="m.safetensors: tensor 'w': shape \\[0, 4611686018427387904\\]"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "o.aq")
    assert not (tmp_path / "o.aq").exists()


def test_shape_arithmetic_on_the_arrow_path_does_not_overflow():
    table = pa.table({"layer_name": ["w"], "weights": pa.array([[]], pa.list_(pa.float32())),
                      "shape": pa.array([[0, 2**40, 2**40]], pa.list_(pa.int64()))})
    with pytest.raises(DataError, match="more elements than fit in 64 bits"):
        aq.ArrowQuantV2().quantize_arrow(table)


def test_a_checkpoint_truncated_while_mapped_is_an_error_not_sigbus(tmp_path):
    from arrowquant.safetensors_io import SafetensorsFile
    save_file({"a": np.ones((256, 256), np.float32), "b": np.ones((256, 256), np.float32)},
              str(tmp_path / "m.safetensors"))
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        os.truncate(tmp_path / "m.safetensors", 4096)
        with pytest.raises(FileFormatError, match="tensor 'b': the file shrank"):
            f.array("b")


# -- the process ---------------------------------------------------------------------------------------

def test_interpreter_exit_with_a_daemon_thread_in_the_kernels_does_not_abort():
    # A finalizer that sleeps during interpreter teardown lets the daemon thread try to take the GIL
    # back while CPython finalizes: before the fix, that aborted every time (exit 134).
    script = textwrap.dedent("""
        import threading, time, numpy as np, arrowquant as aq
        w = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
        q = aq.ArrowQuantV2()
        started = threading.Event()
        def work():
            started.set()
            while True:
                q.quantize(w, 4)
                aq.dequantize(q.quantize(w, 2))
        threading.Thread(target=work, daemon=True).start()
        started.wait()
        class SlowAtTeardown:
            def __del__(self):
                time.sleep(0.3)
        slow = SlowAtTeardown()
    """)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "terminate called" not in r.stderr


def test_quantize_output_does_not_keep_the_input_alive():
    table = make_table(layers(2))
    batch = table.to_batches()[0]
    probe = weakref.ref(batch)
    q = aq.ArrowQuantV2()
    out = q.quantize_arrow_batch(batch, 4, group_size=32)
    held = pa.total_allocated_bytes()
    del batch, table
    gc.collect()
    assert probe() is None
    assert pa.total_allocated_bytes() <= held  # nothing of the input left in pyarrow's pool via the output
    assert isinstance(q.get_markov_metrics()["layers"], dict) and out.num_rows == 2


def test_markov_threshold_reaches_the_file_pipelines(tmp_path):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 256)) * np.linspace(0.01, 1, 256)).astype(np.float32)
    save_file({"w": w}, str(tmp_path / "m.safetensors"))
    counts = []
    for threshold in (0.01, 100.0):
        q = aq.ArrowQuantV2(markov_threshold=threshold)
        q.quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / f"{threshold}.aq")
        counts.append(q.get_markov_metrics()["layers"]["w"]["violation_count"])
    assert counts[0] > counts[1] == 0


def test_thread_pool_follows_the_cpu_affinity():
    script = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); import arrowquant as aq; " \
             "print(aq.simd_info()['hardware_threads'])"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "1"


MOVED = "arrowquant was built for pyarrow {major}.x, found pyarrow {found}; pip install 'pyarrow>={major},<{next}' " \
        "(or an arrowquantize release built for your pyarrow)"
BROKEN = "arrowquant's compiled core cannot load pyarrow {found}'s libarrow ({error}); reinstall arrowquantize"


@pytest.mark.parametrize("found, core_error, expected", [
    ("99.0.0", None, MOVED), ("25.0.1", "libarrow.so.2500: cannot open shared object file", MOVED),
    ("26.9.0", "libarrow.so.2600: cannot open shared object file", BROKEN)])
def test_a_moved_pyarrow_gives_one_clear_line(found, core_error, expected):
    script = textwrap.dedent(f"""
        import sys, pyarrow
        pyarrow.__version__ = {found!r}
        class NoCore:  # what a pyarrow upgrade does: libarrow.so.2600 is gone
            def find_spec(self, name, path=None, target=None):
                if name == "arrowquant._core" and {core_error!r}:
                    raise ImportError({core_error!r})
        sys.meta_path.insert(0, NoCore())
        import arrowquant
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1
    assert last == "ImportError: " + expected.format(major=aq.PYARROW_MAJOR, next=aq.PYARROW_MAJOR + 1, found=found,
                                                     error=core_error)


def test_the_pyarrow_range_is_the_abi_major_in_pyproject():
    from pathlib import Path
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert text.count(f'"pyarrow>={aq.PYARROW_MAJOR},<{aq.PYARROW_MAJOR + 1}"') == 2
    assert "pyarrow==" not in text


def raw_gguf(path, metadata_items, tensors=()):
    """A GGUF v3 file from (key, value type, payload bytes) items and (name, dims, type, offset) tensors."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata_items))
    for key, value_type, payload in metadata_items:
        out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", value_type) + payload
    for name, dims, type_id, offset in tensors:
        out += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", type_id, offset)
    out += b"\0" * (-len(out) % 32)
    for _name, dims, type_id, _offset in tensors:
        out += b"\0" * (4 * int(np.prod(dims)))
    path.write_bytes(out)
    return path


def test_a_long_gguf_metadata_array_costs_its_bytes_not_fifteen_times_them(tmp_path):
    import tracemalloc
    from arrowquant import gguf as aq_gguf
    count = 8 << 20  # 8 MB of uint8 scores, as a real tokenizer's arrays are
    path = raw_gguf(tmp_path / "big.gguf", [("tokenizer.ggml.big", 9, struct.pack("<IQ", 0, count) + bytes(count))])
    tracemalloc.start()
    with aq_gguf.open(path) as f:
        assert len(f.metadata["tokenizer.ggml.big"]) == count
        peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * count, peak  # a list of Python ints took ~15x


def test_a_gguf_array_claiming_more_items_than_bytes_is_refused_before_reading(tmp_path):
    from arrowquant import gguf as aq_gguf
    path = raw_gguf(tmp_path / "lying.gguf", [("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 10**6) + bytes(64))])
    with pytest.raises(aq.FileFormatError, match=r"claims 1000000 items, more than the \d+ bytes left"):
        aq_gguf.open(path)


@pytest.mark.parametrize("shape_payload", [
    struct.pack("<IQ", 5, 71) + struct.pack("<71i", *([1] * 70 + [4])),  # 71 dimensions
    struct.pack("<IQ", 7, 2) + bytes([1, 1]),  # booleans
])
def test_orig_shape_of_too_many_dimensions_or_booleans_is_a_format_error(tmp_path, shape_payload):
    from arrowquant import gguf as aq_gguf
    path = raw_gguf(tmp_path / "shape.gguf", [("comfy.gguf.orig_shape.w", 9, shape_payload)], [("w", [4], 0, 0)])
    with aq_gguf.open(path) as f, pytest.raises(aq.FileFormatError, match="orig_shape.w"):
        f.original_shape("w")


def test_gguf_tensors_sharing_bytes_are_refused(tmp_path):
    from arrowquant import gguf as aq_gguf
    path = raw_gguf(tmp_path / "overlap.gguf", [], [("a", [64], 0, 0), ("b", [64], 0, 128)])
    with pytest.raises(aq.FileFormatError, match="tensors 'a' and 'b' overlap"):
        aq_gguf.open(path)
