"""FP8 checkpoints (E4M3FN, E5M2) as a source, with every scale convention they ship with.

Referees: ml_dtypes' float8 types (and torch's, where torch is installed) decode the codes; the
expected weight is their float32 value times the scale in float32, which is what the file must
hold at F32, and quantizing the FP8 checkpoint must give the bytes that quantizing a float32
checkpoint of those expected values gives. gguf-py reads the GGUF files."""

import json
import math
import os

import ml_dtypes
import numpy as np
import pytest

import arrowquant as aq
import arrowquant.gguf as ag
from arrowquant.cli import main
from arrowquant.errors import FileFormatError, ParameterError
from arrowquant.fp8 import decode_table
from arrowquant.safetensors_io import write_safetensors

gguf = pytest.importorskip("gguf")

FORMATS = {"F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}


def save(path, tensors):
    """{name: (dtype name, array)} -> a safetensors file (FP8 given as ml_dtypes arrays)."""
    items = [(name, dtype, np.ascontiguousarray(a)) for name, (dtype, a) in tensors.items()]
    write_safetensors(path, [(n, d, a.shape, a.nbytes) for n, d, a, in items],
                      (a.reshape(-1).view(np.uint8) for _, _, a in items), overwrite=True)


def fp8_weight(rng, shape, fmt, scale_shape):
    """(codes as an ml_dtypes array, scale array or None, expected float32 weight)."""
    w = rng.standard_t(5, shape).astype(np.float32) * 0.02
    if scale_shape is None:
        codes = w.astype(FORMATS[fmt])
        return codes, None, codes.astype(np.float32)
    if scale_shape == "block":
        blocks = (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
        scale = (rng.uniform(1.0, 2.0, blocks) * np.abs(w).max() / 448).astype(np.float32)
        full = np.repeat(np.repeat(scale, 128, 0), 128, 1)[:shape[0], :shape[1]]
    else:
        scale = (rng.uniform(1.0, 2.0, scale_shape) * np.abs(w).max() / 448).astype(np.float32)
        full = scale.reshape(-1, *([1] * (len(shape) - 1))) if scale.size > 1 else scale.reshape(())
    codes = (w / full).astype(FORMATS[fmt])
    expected = codes.astype(np.float32) * full
    return codes, scale, expected.astype(np.float32)


CONVENTIONS = [  # (scale suffix or None, scale shape, activation-scale suffix, marker)
    (None, None, None, False),
    ("scale_weight", (1,), "scale_input", True),          # ComfyUI scaled_fp8
    ("weight_scale", (), "input_scale", False),           # one value
    ("weight_scale", (384,), "input_scale", False),       # per output channel
    ("weight_scale", (384, 1), None, False),
    ("weight_scale_inv", "block", None, False),           # 128 x 128 blocks, DeepSeek / Qwen3-FP8
]


def test_decoding_every_code_matches_ml_dtypes_and_torch():
    for fmt, dtype in FORMATS.items():
        codes = np.arange(256, dtype=np.uint8)
        assert np.array_equal(decode_table(fmt), codes.view(dtype).astype(np.float32), equal_nan=True), fmt
    torch = pytest.importorskip("torch")
    for fmt, dtype in (("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)):
        codes = torch.arange(256, dtype=torch.uint8).view(dtype)
        assert np.array_equal(decode_table(fmt), codes.float().numpy(), equal_nan=True), fmt


def flux_checkpoint(tmp_path, fmt, convention, seed=0):
    """A tiny Flux (BFL names) in FP8 with ``convention``; returns (path, {weight: expected float32})."""
    suffix, scale_shape, input_suffix, marker = convention
    rng = np.random.default_rng(seed)
    tensors, expected = {}, {}
    for name, shape in (("double_blocks.0.img_attn.proj.weight", (384, 512)), ("img_in.weight", (384, 256)),
                        ("double_blocks.0.img_mlp.0.weight", (384, 300))):
        codes, scale, want = fp8_weight(rng, shape, fmt, scale_shape)
        tensors[name] = (fmt, codes)
        expected[name] = want
        if suffix is not None:
            tensors[name[:-len("weight")] + suffix] = ("F32", scale)
        if input_suffix is not None:
            tensors[name[:-len("weight")] + input_suffix] = ("F32", np.array([0.5], np.float32))
    tensors["double_blocks.0.img_attn.norm.query_norm.scale"] = ("F32", rng.standard_normal(64).astype(np.float32))
    if marker:
        tensors["scaled_fp8"] = (fmt, np.zeros((0,), FORMATS[fmt]))
    path = tmp_path / f"flux-{fmt}.safetensors"
    save(path, tensors)
    return path, expected


def float_twin(tmp_path, fp8_path, expected):
    """The same checkpoint with every FP8 weight as its expected float32 values and no scales."""
    from arrowquant.safetensors_io import SafetensorsFile
    tensors = {}
    with SafetensorsFile(fp8_path) as sf:
        for name in sf.names():
            if name in expected:
                tensors[name] = ("F32", expected[name])
            elif sf.tensors[name].dtype == "F32" and not name.endswith(("scale_weight", "weight_scale", "weight_scale_inv",
                                                                         "scale_input", "input_scale")):
                tensors[name] = ("F32", np.array(sf.array(name)))
    path = tmp_path / "twin.safetensors"
    save(path, tensors)
    return path


def gguf_tensors(path):
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, np.array(t.data)) for t in reader.tensors}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda c: f"{c[0]}{c[1]}")
def test_every_scale_convention_is_applied_exactly(tmp_path, fmt, convention):
    src, expected = flux_checkpoint(tmp_path, fmt, convention)
    report = ag.convert(src, tmp_path / "f32.gguf", type="F32")
    stored = gguf_tensors(tmp_path / "f32.gguf")
    # Scales, activation scales and the marker are applied or left out, never written as tensors.
    assert set(stored) == set(expected) | {"double_blocks.0.img_attn.norm.query_norm.scale"}
    for name, want in expected.items():
        assert stored[name][0] == "F32"
        assert np.array_equal(stored[name][1].reshape(want.shape), want), name
    layers = ("double_blocks.0.img_attn.proj", "img_in", "double_blocks.0.img_mlp.0")
    companions = {f"{layer}.{suffix}" for layer in layers for suffix in convention[:3:2] if suffix}
    assert set(report["components"]["model"]["tensors_dropped"]) == companions | ({"scaled_fp8"} if convention[3] else set())


@pytest.mark.parametrize("convention", CONVENTIONS[1:4:2], ids=["comfyui", "per-channel"])
def test_quantizing_fp8_gives_the_bytes_of_its_float_values(tmp_path, convention):
    src, expected = flux_checkpoint(tmp_path, "F8_E4M3", convention)
    twin = float_twin(tmp_path, src, expected)
    ag.convert(src, tmp_path / "a.gguf", type="Q4_K_M")
    ag.convert(twin, tmp_path / "b.gguf", type="Q4_K_M")
    a, b = gguf_tensors(tmp_path / "a.gguf"), gguf_tensors(tmp_path / "b.gguf")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0] and np.array_equal(a[name][1], b[name][1]), name
    assert a["double_blocks.0.img_attn.proj.weight"][0] == "Q4_K" and a["img_in.weight"][0] == "F16"

    report = aq.quantize_diffusion_model(src, tmp_path / "a.aq")
    aq.quantize_diffusion_model(twin, tmp_path / "b.aq")
    assert report["overall"]["layers_quantized"] == 3
    assert set(report["components"]["model"]["dropped"]) >= {"img_in." + convention[0]}
    with aq.open(tmp_path / "a.aq") as fa, aq.open(tmp_path / "b.aq") as fb:
        assert fa.layer_names == fb.layer_names
        for name in expected:
            ta, tb = fa.tensor(name), fb.tensor(name)
            assert np.array_equal(ta.quantized_data, tb.quantized_data), name
            assert np.array_equal(ta.scales, tb.scales), name
    quality = aq.validate_quality(src, tmp_path / "a.aq")
    assert quality["passed"] and set(quality["layers"]) == set(expected), quality["problems"]


def test_a_checkpoint_saved_by_torch_in_fp8_converts(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    torch.manual_seed(0)
    w = torch.randn(384, 512) * 0.02
    scale = (w.abs().max() / 448).reshape(1)
    codes = (w / scale).to(torch.float8_e4m3fn)
    save_file({"double_blocks.0.img_attn.proj.weight": codes, "double_blocks.0.img_attn.proj.scale_weight": scale,
               "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, str(tmp_path / "m.safetensors"))
    ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="F32")
    stored = gguf_tensors(tmp_path / "m.gguf")
    assert list(stored) == ["double_blocks.0.img_attn.proj.weight"]
    assert np.array_equal(stored["double_blocks.0.img_attn.proj.weight"][1], (codes.float() * scale).numpy())


@pytest.mark.parametrize("extra,message", [
    ({"img_out.weight_scale": ("F32", np.ones(1, np.float32))}, r"tensor 'img_out.weight_scale': an FP8 weight scale "
                                                                r"for 'img_out.weight', which the checkpoint does not hold"),
    ({"norm.weight": ("F32", np.ones(64, np.float32)), "norm.weight_scale": ("F32", np.ones(1, np.float32))},
     r"'norm.weight_scale': an FP8 weight scale for 'norm.weight', which is F32, not F8_E4M3"),
    ({"w.weight_scale_inv": ("F32", np.ones((2, 2), np.float32))}, r"'w.weight_scale_inv': a 128 x 128 block scale "
                                                                    r"of 'w.weight' \[384, 512\] must have shape \[3, 4\]"),
    ({"w.weight_scale": ("F32", np.ones(7, np.float32))}, r"one value or one per output channel \(384\); found shape \[7\]"),
    ({"w.weight_scale": ("F32", np.ones(1, np.float32)), "w.scale_weight": ("F32", np.ones(1, np.float32))},
     r"already has the scale"),
    ({"w.weight_scale": ("F32", np.array([np.nan], np.float32))}, r"'w.weight_scale': the scale of 'w.weight' holds NaN"),
    ({"w.weight_scale": ("I32", np.ones(1, np.int32))}, r"a scale must be a float tensor .* found I32"),
])
def test_bad_scales_are_one_error_naming_file_and_tensor_and_nothing_is_written(tmp_path, extra, message):
    rng = np.random.default_rng(1)
    codes, _, _ = fp8_weight(rng, (384, 512), "F8_E4M3", None)
    src = tmp_path / "bad.safetensors"
    save(src, {"w.weight": ("F8_E4M3", codes), **extra})
    for run in (lambda: ag.convert(src, tmp_path / "out.gguf", type="Q8_0", arch="flux"),
                lambda: aq.quantize_diffusion_model(src, tmp_path / "out.aq")):
        with pytest.raises(FileFormatError, match=message) as caught:
            run()
        assert str(src) in str(caught.value)
        assert sorted(os.listdir(tmp_path)) == ["bad.safetensors"]


def test_the_cli_quantizes_fp8_and_a_run_that_quantizes_nothing_exits_1(tmp_path, capsys):
    src, _ = flux_checkpoint(tmp_path, "F8_E4M3", CONVENTIONS[1])
    assert main(["quantize", str(src), str(tmp_path / "m.aq"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall"]["layers_quantized"] == 3
    ints = tmp_path / "ints.safetensors"
    save(ints, {"position_ids": ("I64", np.arange(4096, dtype=np.int64).reshape(1, -1)),
                "norm.weight": ("F32", np.ones(64, np.float32))})
    assert main(["quantize", str(ints), str(tmp_path / "ints.aq")]) == 1
    err = capsys.readouterr().err
    assert "no tensor to quantize (1 of dtype I64; 1 not eligible" in err and "nothing written" in err
    assert not (tmp_path / "ints.aq").exists()
    with pytest.raises(ParameterError, match="no tensor to quantize"):
        aq.quantize_diffusion_model(ints, tmp_path / "ints.aq")


@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda c: f"{c[0]}{c[1]}")
def test_gguf_widens_fp8_a_few_rows_at_a_time_with_the_same_bytes_and_statistics(tmp_path, monkeypatch, convention):
    """The GGUF sink widens an FP8 weight in pieces of whole rows (128-row multiples under block
    scales), so the float32 copy of the largest tensor never exists whole: pieces of 4 KB here
    give the bytes and the error statistics of the float twin, for every scale convention."""
    import arrowquant.fp8 as fp8
    src, expected = flux_checkpoint(tmp_path, "F8_E4M3", convention)
    twin = float_twin(tmp_path, src, expected)
    pieces = []
    real = fp8.widened_pieces

    def counted(*args, **kwargs):
        for piece in real(*args, **kwargs):
            pieces.append(piece.shape[0])
            yield piece

    monkeypatch.setattr(fp8, "WIDEN_PIECE_BYTES", 4096)
    import importlib
    monkeypatch.setattr(importlib.import_module("arrowquant.gguf.convert"), "widened_pieces", counted)
    a = ag.convert(src, tmp_path / "a.gguf", type="Q4_K_M")["components"]["model"]["tensors"]
    b = ag.convert(twin, tmp_path / "b.gguf", type="Q4_K_M")["components"]["model"]["tensors"]
    assert len(pieces) >= 3 * len(expected)  # every weight in several pieces
    ta, tb = gguf_tensors(tmp_path / "a.gguf"), gguf_tensors(tmp_path / "b.gguf")
    for name in expected:
        assert ta[name][0] == tb[name][0] and np.array_equal(ta[name][1], tb[name][1]), name
        if "relative_rmse" in b[name]:
            assert a[name]["relative_rmse"] == pytest.approx(b[name]["relative_rmse"], rel=1e-9)
            assert a[name]["cosine"] == pytest.approx(b[name]["cosine"], rel=1e-9)
