"""safetensors -> .aq -> safetensors, checked with the safetensors package as independent reader."""

import json
import math
import os
import struct

import ml_dtypes
import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import decode
from safetensors.numpy import save_file

import arrowquant as aq
from arrowquant import FileFormatError, MissingFileError, ParameterError

NP = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def read_safetensors(path):
    """Independent reader: the safetensors package, raw bytes per tensor."""
    with open(path, "rb") as f:
        return {name: info for name, info in safetensors.deserialize(f.read())}


def as_array(info):
    dtype = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
             "U8": np.uint8, "BOOL": np.bool_, "F64": np.float64, "I32": np.int32}[info["dtype"]]
    return np.frombuffer(bytes(info["data"]), dtype).reshape(info["shape"])


def make_checkpoint(path, dtype="F32", seed=0, metadata=None):
    rng = np.random.default_rng(seed)
    tensors = {
        "unet.conv_in.weight": rng.standard_normal((32, 4, 3, 3)),
        "unet.down.0.attn.to_q.weight": rng.standard_normal((64, 96)),
        "unet.down.0.attn.to_q.bias": rng.standard_normal(64),
        "unet.small.weight": rng.standard_normal((8, 8)),      # < 1024 elements: carried
        "unet.conv_out.weight": rng.standard_normal((4, 32, 3, 3)),
    }
    tensors = {k: (v * 0.05).astype(NP[dtype]) for k, v in tensors.items()}
    tensors["position_ids"] = np.arange(77, dtype=np.int64)
    tensors["mask"] = np.array([True, False, True])
    save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
    return tensors


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_round_trip_through_aq_back_to_safetensors(tmp_path, dtype, bits):
    src = tmp_path / "model.safetensors"
    tensors = make_checkpoint(src, dtype)
    report = aq.ArrowQuantV2(group_size=64).quantize_from_safetensors(src, tmp_path / "model.aq", bit_width=bits)
    assert report["layers_quantized"] == 3 and report["layers_carried"] == 4
    aqf = aq.open(tmp_path / "model.aq")
    aqf.to_safetensors(tmp_path / "back.safetensors")
    back = read_safetensors(tmp_path / "back.safetensors")
    assert set(back) == set(tensors)
    for name, original in tensors.items():
        assert back[name]["dtype"] == {np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL"}.get(original.dtype, dtype)
        assert back[name]["shape"] == list(original.shape)
        restored = as_array(back[name])
        if name in report["layers"]:
            t = aqf.tensor(name)
            expected = decode(t.quantized_data.tobytes(), t.scales, t.zero_points, t.shape, bits, 64)
            assert np.array_equal(restored, expected.astype(original.dtype))
            assert report["layers"][name]["bit_width"] == bits
        else:
            assert bytes(back[name]["data"]) == original.tobytes()  # carried through byte for byte


def test_report_numbers_agree_with_numpy(tmp_path):
    src = tmp_path / "m.safetensors"
    tensors = make_checkpoint(src)
    report = aq.ArrowQuantV2(group_size=32).quantize_from_safetensors(src, tmp_path / "m.aq", bit_width=2)
    aqf = aq.open(tmp_path / "m.aq")
    cosines = []
    for name, layer in report["layers"].items():
        x = tensors[name].astype(np.float64).ravel()
        y = aqf.dequantize(name).astype(np.float64).ravel()
        cos = x @ y / math.sqrt((x @ x) * (y @ y))
        assert layer["cosine"] == pytest.approx(cos, abs=1e-6)  # float32 lane sums, float64 totals
        assert layer["relative_rmse"] == pytest.approx(np.sqrt(np.sum((x - y) ** 2) / np.sum(x * x)), rel=1e-5)
        assert layer["max_abs_error"] == pytest.approx(np.abs(x - y).max(), rel=1e-6)
        cosines.append(cos)
    assert report["mean_cosine"] == pytest.approx(np.mean(cosines), abs=1e-6)
    assert report["min_cosine"] == pytest.approx(min(cosines), abs=1e-6)
    assert report["input_bytes"] == sum(t.nbytes for t in tensors.values())
    assert report["output_bytes"] == os.path.getsize(tmp_path / "m.aq")
    assert report["compression_ratio"] == pytest.approx(report["input_bytes"] / report["output_bytes"])


def test_aq_metadata_and_zero_copy_tensors(tmp_path):
    src = tmp_path / "m.safetensors"
    make_checkpoint(src, metadata={"format": "pt", "model": "tiny-unet"})
    aq.ArrowQuantV2(group_size=128).quantize_from_safetensors(src, tmp_path / "m.aq", bit_width=4)
    f = aq.open(tmp_path / "m.aq")
    assert f.metadata["format"] == "arrowquant.aq" and f.metadata["format_version"] == "1"
    assert f.metadata["version"] == aq.__version__
    assert f.metadata["source_files"] == ["m.safetensors"]
    assert f.metadata["settings"]["bit_width"] == 4 and f.metadata["settings"]["group_size"] == 128
    assert f.metadata["source_metadata"] == {"m.safetensors": {"format": "pt", "model": "tiny-unet"}}
    t = f.tensor("unet.down.0.attn.to_q.weight")
    assert isinstance(t, aq.QuantizedTensor) and t.source_dtype == "F32"
    assert not t.quantized_data.flags.owndata and not t.quantized_data.flags.writeable  # a view on the mapping
    assert np.array_equal(f.tensor("position_ids"), np.arange(77))
    back = read_safetensors(tmp_path / "m.safetensors")  # untouched input
    assert "unet.conv_in.weight" in back
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        f.tensor("nope")


def test_sharded_checkpoint_by_index_and_by_folder(tmp_path):
    rng = np.random.default_rng(1)
    shard1 = {"a.weight": rng.standard_normal((32, 64)).astype(np.float32)}
    shard2 = {"b.weight": rng.standard_normal((64, 32)).astype(np.float16), "b.bias": np.ones(64, np.float16)}
    save_file(shard1, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(shard2, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"metadata": {"total_size": 0}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                            "b.weight": "model-00002-of-00002.safetensors",
                                                            "b.bias": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path.parent / (tmp_path.name + "-out")  # outside the input folder, which is refused
    out.mkdir()
    q = aq.ArrowQuantV2(group_size=32)
    for source in (tmp_path / "model.safetensors.index.json", tmp_path):
        report = q.quantize_from_safetensors(source, out / "m.aq", overwrite=True)
        assert report["layers_quantized"] == 2 and report["layers_carried"] == 1
        f = aq.open(out / "m.aq")
        assert sorted(f.layer_names) == ["a.weight", "b.bias", "b.weight"]
        assert f.tensor("b.weight").source_dtype == "F16"
        assert f.metadata["source_files"] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_include_and_exclude_patterns(tmp_path):
    src = tmp_path / "m.safetensors"
    make_checkpoint(src)
    report = aq.ArrowQuantV2().quantize_from_safetensors(
        src, tmp_path / "m.aq", include=["*.bias", "unet.small.*"], exclude="*conv_out*")
    assert set(report["layers"]) == {"unet.conv_in.weight", "unet.down.0.attn.to_q.weight",
                                     "unet.down.0.attn.to_q.bias", "unet.small.weight"}
    with pytest.raises(ParameterError, match="include must be a glob pattern"):
        aq.ArrowQuantV2().quantize_from_safetensors(src, tmp_path / "x.aq", include=3)


def test_progress_callback_order_and_cancellation_leaves_nothing(tmp_path):
    src = tmp_path / "m.safetensors"
    make_checkpoint(src)
    calls = []
    aq.ArrowQuantV2().quantize_from_safetensors(src, tmp_path / "m.aq", progress_callback=lambda n, f: calls.append((n, f)))
    with safetensors.safe_open(str(src), "numpy") as f:
        names = list(f.keys())
    assert sorted(n for n, _ in calls) == sorted(names)
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    def cancel(name, fraction):
        if len(calls) >= 0 and fraction > 0.3:
            raise KeyboardInterrupt
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        aq.ArrowQuantV2().quantize_from_safetensors(src, tmp_path / "cancelled.aq", progress_callback=cancel)
    assert sorted(os.listdir(tmp_path)) == before


def test_nan_in_a_layer_fails_with_file_and_layer_and_leaves_nothing(tmp_path):
    w = np.ones((32, 64), np.float32)
    w[3, 3] = np.inf
    save_file({"good.weight": np.ones((32, 64), np.float32), "bad.weight": w}, str(tmp_path / "m.safetensors"))
    with pytest.raises(aq.DataError, match=r"m.safetensors: layer 'bad.weight'.*index 195"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_bad_paths(tmp_path):
    src = tmp_path / "m.safetensors"
    make_checkpoint(src)
    q = aq.ArrowQuantV2()
    with pytest.raises(MissingFileError, match="nope.safetensors: no such file"):
        q.quantize_from_safetensors(tmp_path / "nope.safetensors", tmp_path / "o.aq")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingFileError, match="holds no .safetensors files"):
        q.quantize_from_safetensors(empty, tmp_path / "o.aq")
    with pytest.raises(ParameterError, match="output folder .*missing_dir does not exist"):
        q.quantize_from_safetensors(src, tmp_path / "missing_dir" / "o.aq")
    with pytest.raises(ParameterError, match="would overwrite the input"):
        q.quantize_from_safetensors(src, src)
    with pytest.raises(ParameterError, match="is a directory"):
        q.quantize_from_safetensors(src, empty)
    with pytest.raises(MissingFileError):
        aq.open(tmp_path / "none.aq")
    with pytest.raises(FileFormatError, match="not a readable Arrow IPC"):
        aq.open(src)
    assert sorted(os.listdir(tmp_path)) == ["empty", "m.safetensors"]


def write_raw_safetensors(path, header_obj_or_bytes, data=b""):
    header = header_obj_or_bytes if isinstance(header_obj_or_bytes, bytes) else json.dumps(header_obj_or_bytes).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


CORRUPT = {
    "short": (b"\x01\x02", "too short"),
    "header_past_end": (struct.pack("<Q", 10_000) + b"{}", "exceeds the file"),
    "not_json": (None, "not valid UTF-8 JSON"),
    "unknown_dtype": ({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, "unknown dtype 'F128'"),
    "size_lies": ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, "needs 16 bytes"),
    "past_data": ({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, "beyond the data area"),
    "overlap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlap"),
    "negative_dim": ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, "non-negative integers"),
    "bad_offsets": ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, "data_offsets must be"),
    "not_object": ([1, 2, 3], "must be a JSON object"),
    "bad_metadata": ({"__metadata__": {"a": 1}}, "__metadata__ must map strings"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_headers_are_clear_errors_naming_file_and_tensor(tmp_path, case):
    content, message = CORRUPT[case]
    path = tmp_path / "bad.safetensors"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        write_raw_safetensors(path, b"{not json", bytes(16))
    else:
        write_raw_safetensors(path, content, bytes(16))
    with pytest.raises(FileFormatError, match=message) as info:
        aq.ArrowQuantV2().quantize_from_safetensors(path, tmp_path / "out.aq")
    assert "bad.safetensors" in str(info.value)
    assert not (tmp_path / "out.aq").exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors"]


def test_truncated_checkpoint_is_refused_before_writing(tmp_path):
    src = tmp_path / "m.safetensors"
    make_checkpoint(src)
    data = src.read_bytes()
    src.write_bytes(data[:-100])
    with pytest.raises(FileFormatError, match="beyond the data area .*truncated"):
        aq.ArrowQuantV2().quantize_from_safetensors(src, tmp_path / "m.aq")
    assert not (tmp_path / "m.aq").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 400), value=st.integers(0, 255), cut=st.integers(0, 64))
def test_mutated_headers_never_crash_and_never_leave_output(tmp_path_factory, position, value, cut):
    tmp = tmp_path_factory.mktemp("fuzz")
    src = tmp / "m.safetensors"
    save_file({"w": np.arange(2048, dtype=np.float32).reshape(32, 64), "b": np.ones(4, np.float16)}, str(src))
    data = bytearray(src.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    data[min(position, 8 + header_len - 1)] = value
    if cut:
        del data[len(data) - cut:]
    src.write_bytes(bytes(data))
    try:
        report = aq.ArrowQuantV2().quantize_from_safetensors(src, tmp / "o.aq")
    except aq.ArrowQuantError:
        assert not (tmp / "o.aq").exists()
    else:
        # Accepted: then the safetensors package must agree the file is valid, tensor for tensor.
        reference = read_safetensors(src)
        assert report["layers_quantized"] + report["layers_carried"] == len(reference)
