"""GGUF files as the runtimes read them, checked by independent referees: gguf-py (the gguf package)
reads every file and decodes every tensor, its numpy quantizers give the bytes of the legacy types,
and ggml's own quantizer (tests/ggml/build.sh) gives the k-quant bytes."""

import ctypes
import json
import os
import struct
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import arrowquant as aq
import arrowquant.gguf as ag
from arrowquant.demo import make_demo_model
from arrowquant.errors import FileFormatError, ParameterError

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize, quantize as gguf_quantize  # noqa: E402

from test_gguf_kernels import LIB, ggml_encode  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_model(tmp_path_factory.mktemp("gguf") / "model")


@pytest.fixture(scope="module")
def unet_q4km(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf_out") / "unet-Q4_K_M.gguf"
    return out, ag.convert(demo / "unet", out, type="Q4_K_M")


def reader_tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def field(reader, key):
    f = reader.get_field(key)
    if f is None:
        return None
    if f.types[0] == gguf.GGUFValueType.STRING:
        return str(bytes(f.parts[f.data[-1]]), "utf-8")
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return [int(f.parts[i][0]) for i in f.data]
    return int(f.parts[f.data[-1]][0])


# -- what gguf-py reads -----------------------------------------------------------------------------------

def test_gguf_py_reads_every_tensor_and_decodes_it_as_we_do(unet_q4km, demo):
    path, report = unet_q4km
    reader = gguf.GGUFReader(str(path))
    assert field(reader, "general.architecture") == "sd1"
    assert field(reader, "general.quantization_version") == 2
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q4_K_M
    from arrowquant.safetensors_io import SafetensorsFile
    with SafetensorsFile(demo / "unet" / "diffusion_pytorch_model.safetensors") as sf, ag.open(path) as ours:
        assert [t.name for t in reader.tensors] == sf.names()
        for t in reader.tensors:
            assert t.data_offset % 32 == 0
            original = sf.tensors[t.name].shape
            assert ours.original_shape(t.name) == original
            theirs = gguf_dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)
            assert np.array_equal(theirs, ours.dequantize(t.name).reshape(-1)), t.name
            assert gguf.GGMLQuantizationType(t.tensor_type).name == report["components"]["model"]["tensors"][t.name]["type"]


@pytest.mark.parametrize("mix,type_name", [("Q8_0", "Q8_0"), ("Q4_0", "Q4_0"), ("Q4_1", "Q4_1"), ("Q5_0", "Q5_0"),
                                           ("Q5_1", "Q5_1"), ("BF16", "BF16"), ("F16", "F16")])
def test_legacy_types_match_gguf_py_quantizers_byte_for_byte(demo, tmp_path, mix, type_name):
    out = tmp_path / "u.gguf"
    report = ag.convert(demo / "unet", out, type=mix, type_for=["*=" + type_name], with_stats=False, method="ggml")
    from arrowquant.safetensors_io import SafetensorsFile
    with SafetensorsFile(demo / "unet" / "diffusion_pytorch_model.safetensors") as sf:
        checked = 0
        for name, t in reader_tensors(out).items():
            if t.shape[0] % 32 and type_name not in ("BF16", "F16"):
                continue  # fell back (rows the block does not divide): covered elsewhere
            expected = gguf_quantize(np.ascontiguousarray(sf.array(name), np.float32).reshape(-1, t.shape[0]),
                                     gguf.GGMLQuantizationType[type_name])
            assert t.data.tobytes() == expected.tobytes(), name
            checked += 1
    assert checked > 100 and report["type"] == mix


@pytest.mark.parametrize("type_name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_k_quants_in_files_are_ggml_reference_bytes(tmp_path, type_name):
    if not LIB.is_file():
        if os.environ.get("ARROWQUANT_REQUIRE_REFEREES"):
            pytest.fail(f"{LIB} is missing")
        pytest.skip("ggml reference library not built")
    lib = ctypes.CDLL(str(LIB))
    rng = np.random.default_rng(5)
    tensors = {"double_blocks.0.img_attn.proj.weight": (0.02 * rng.standard_t(4, (128, 512))).astype(np.float32),
               "double_blocks.0.img_mlp.0.weight": rng.standard_normal((64, 1024)).astype(ml_dtypes.bfloat16)}
    save_file(tensors, str(tmp_path / "flux.safetensors"))
    ag.convert(tmp_path / "flux.safetensors", tmp_path / "flux.gguf", type="Q4_K_M", type_for=[f"*={type_name}"],
               method="ggml")
    stored = reader_tensors(tmp_path / "flux.gguf")
    for name, x in tensors.items():
        expected = ggml_encode(lib, type_name, np.ascontiguousarray(x.astype(np.float32).reshape(-1)))
        assert stored[name].data.tobytes() == expected.tobytes(), name


# -- the per-tensor rules ------------------------------------------------------------------------------

def test_q4_k_m_rules_on_a_unet(unet_q4km):
    _, report = unet_q4km
    tensors = report["components"]["model"]["tensors"]
    types = {name: t["type"] for name, t in tensors.items()}
    assert types["mid_block.attentions.0.transformer_blocks.0.attn1.to_v.weight"] == "Q6_K"
    assert types["mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"] == "Q6_K"
    assert types["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"] == "Q4_K"
    assert types["conv_in.weight"] == "F16" and types["time_embedding.linear_1.weight"] == "F16"
    assert types["conv_in.bias"] == "F32"  # 1-D: F32, lossless
    assert tensors["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"]["cosine"] > 0.99
    # a 3x3 convolution's rows (3) no block divides: F16, reported
    conv = tensors["down_blocks.1.resnets.0.conv2.weight"]
    assert conv["type"] == "F16" and conv["stored_shape"] == [128, 128, 3, 3]
    assert "down_blocks.1.resnets.0.conv2.weight" in {f["tensor"] for f in report["fallbacks"]}


def test_comfyui_rows_layout_k_quantizes_convolutions(demo, tmp_path):
    # ComfyUI-GGUF's own sd1/sdxl layout: such tensors stored as rows of 256, shape in metadata
    report = ag.convert(demo / "unet", tmp_path / "u.gguf", type="Q4_K_M", rearrange_rows=True)
    conv = report["components"]["model"]["tensors"]["down_blocks.1.resnets.0.conv2.weight"]
    assert conv["type"] == "Q4_K" and conv["stored_shape"][-1] == 256 and conv["shape"] == [128, 128, 3, 3]
    reader = gguf.GGUFReader(str(tmp_path / "u.gguf"))
    f = reader.get_field("comfy.gguf.orig_shape.down_blocks.1.resnets.0.conv2.weight")
    assert f.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]  # what ComfyUI-GGUF checks
    assert [int(f.parts[i][0]) for i in f.data] == [128, 128, 3, 3]
    with ag.open(tmp_path / "u.gguf") as g:
        assert g.dequantize("down_blocks.1.resnets.0.conv2.weight").shape == (128, 128, 3, 3)


def test_rows_no_block_divides_fall_back_and_are_reported(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {"double_blocks.0.img_attn.proj.weight": rng.standard_normal((64, 512)).astype(np.float32),
               "double_blocks.0.odd.weight": rng.standard_normal((64, 96)).astype(np.float32),     # 96: Q5_0
               "double_blocks.0.odder.weight": rng.standard_normal((64, 100)).astype(np.float32)}  # 100: F16
    save_file(tensors, str(tmp_path / "m.safetensors"))
    report = ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q4_K_M")
    fallbacks = {f["tensor"]: f for f in report["fallbacks"]}
    assert fallbacks["double_blocks.0.odd.weight"]["to_type"] == "Q5_0"
    assert fallbacks["double_blocks.0.odder.weight"]["to_type"] == "F16"
    assert "not a multiple of Q4_K's block of 256" in fallbacks["double_blocks.0.odd.weight"]["reason"]
    assert "double_blocks.0.img_attn.proj.weight" not in fallbacks


def test_five_dimensional_tensors_are_stored_in_two_in_f32_with_their_shape(tmp_path):
    rng = np.random.default_rng(2)
    tensors = {"double_blocks.0.img_attn.proj.weight": rng.standard_normal((64, 256)).astype(np.float32),
               "img_in.proj.weight": rng.standard_normal((32, 16, 1, 2, 2)).astype(np.float32)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q8_0", arch="hyvid")
    with ag.open(tmp_path / "m.gguf") as f:
        assert f.tensors["img_in.proj.weight"].shape == (32, 64)
        # A Conv3d weight: runtimes decode no quantized or BF16 type for it (ComfyUI-GGUF reshapes
        # only F32 / F16 tensors to comfy.gguf.orig_shape), so it stays F32.
        assert f.tensors["img_in.proj.weight"].type.name == "F32"
        assert np.array_equal(f.dequantize("img_in.proj.weight"), tensors["img_in.proj.weight"])


@pytest.mark.parametrize("names,arch", [
    (["double_blocks.0.img_attn.proj.weight"], "flux"),
    (["transformer_blocks.0.attn.norm_added_k.weight"], "flux"),
    (["joint_blocks.0.x_block.attn.qkv.weight"], "sd3"),
    (["down_blocks.0.downsamplers.0.conv.weight", "add_embedding.linear_1.weight"], "sdxl"),
    (["down_blocks.0.downsamplers.0.conv.weight"], "sd1"),
    (["blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation"], "wan"),
    (["txt_norm.weight", "transformer_blocks.0.img_mod.1.weight"], "qwen_image"),
    # diffusers' QwenImage also has flux's norm_added_k: qwen_image is told first
    (["txt_norm.weight", "transformer_blocks.0.img_mod.1.weight", "transformer_blocks.0.attn.norm_added_k.weight"],
     "qwen_image"),
    (["blocks.0.attn1.norm_q.weight", "condition_embedder.text_embedder.linear_1.weight", "scale_shift_table"], "wan"),
])
def test_architecture_detection(names, arch):
    from arrowquant.architectures import detect_architecture
    assert detect_architecture(names).name == arch


def test_single_file_prefixes_are_stripped_and_other_parts_dropped(tmp_path):
    rng = np.random.default_rng(3)
    save_file({"model.diffusion_model.double_blocks.0.img_attn.proj.weight": rng.standard_normal((64, 256)).astype(np.float32),
               "first_stage_model.decoder.conv_in.weight": rng.standard_normal((64, 256)).astype(np.float32)},
              str(tmp_path / "m.safetensors"))
    report = ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q8_0")
    comp = report["components"]["model"]
    assert list(comp["tensors"]) == ["double_blocks.0.img_attn.proj.weight"]
    assert comp["tensors_dropped"] == ["first_stage_model.decoder.conv_in.weight"]


def test_unknown_architecture_and_bad_types_are_one_clear_error(tmp_path):
    save_file({"encoder.layer.0.weight": np.ones((64, 256), np.float32)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(ParameterError, match="cannot tell the model's architecture .* pass arch=.* LlamaForCausalLM"):
        ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf")
    with pytest.raises(ParameterError, match="type must be one of .*got 'Q7_K'"):
        ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q7_K")
    with pytest.raises(ParameterError, match="unknown GGUF type 'Q9'"):
        ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type_for=["*=Q9"])
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


# -- folders, paths, the CLI ----------------------------------------------------------------------------

def test_a_diffusers_folder_gets_a_gguf_per_denoiser_and_keeps_the_rest(demo, tmp_path):
    out = tmp_path / "sd-gguf"
    report = ag.convert(demo, out, type="Q8_0")
    assert list(report["components"]) == ["unet"] and report["kept_as_safetensors"] == ["text_encoder", "vae"]
    assert (out / "unet" / "diffusion_pytorch_model.gguf").is_file() and (out / "unet" / "config.json").is_file()
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").is_file() and (out / "model_index.json").is_file()
    assert report["components"]["unet"]["output"] == str(out / "unet" / "diffusion_pytorch_model.gguf")


def test_outputs_follow_the_path_rules(demo, tmp_path):
    with pytest.raises(ParameterError, match="lies inside the input"):
        ag.convert(demo, demo / "out")
    (tmp_path / "keep.gguf").write_bytes(b"mine")
    with pytest.raises(ParameterError, match="exists"):
        ag.convert(demo / "unet", tmp_path / "keep.gguf")
    assert (tmp_path / "keep.gguf").read_bytes() == b"mine"
    with pytest.warns(UserWarning, match="does not end in .gguf"):
        ag.convert(demo / "unet", tmp_path / "unet.bin", type="Q8_0")


def test_reader_refuses_damaged_files(unet_q4km, tmp_path):
    path, _ = unet_q4km
    data = path.read_bytes()
    cases = {"magic": b"GGUX" + data[4:], "truncated": data[: len(data) // 2],
             "lying_count": data[:8] + struct.pack("<Q", 2**40) + data[16:], "tiny": data[:10]}
    for name, blob in cases.items():
        (tmp_path / f"{name}.gguf").write_bytes(blob)
        with pytest.raises(FileFormatError, match=f"{name}.gguf"):
            ag.open(tmp_path / f"{name}.gguf")


def test_cli_converts_and_dequantizes(demo, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "arrowquant", *map(str, args)], capture_output=True, text=True)

    r = run("gguf", demo / "unet", tmp_path / "u.gguf", "--type", "Q5_K_M", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["type"] == "Q5_K_M" and report["components"]["model"]["output"] == str(tmp_path / "u.gguf")
    r = run("dequantize", tmp_path / "u.gguf", tmp_path / "u.safetensors")
    assert r.returncode == 0, r.stderr
    import safetensors
    name = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    with safetensors.safe_open(str(tmp_path / "u.safetensors"), "np") as f:
        w, conv = f.get_tensor(name), f.get_tensor("down_blocks.1.resnets.0.conv2.weight")
    assert w.shape == (256, 256) and w.dtype == np.float32  # quantized: decoded to float32
    assert conv.shape == (128, 128, 3, 3) and conv.dtype == np.float16  # stored F16: as stored
    with ag.open(tmp_path / "u.gguf") as g:
        assert np.array_equal(w, g.dequantize(name))
    r = run("gguf", demo / "unet", tmp_path / "u.gguf")
    assert r.returncode == 1 and "exists" in r.stderr and r.stderr.count("\n") == 1


def test_search_method_lowers_the_error_of_k_quant_tensors(demo, tmp_path):
    ggml_mode = ag.convert(demo / "unet", tmp_path / "g.gguf", type="Q4_K_M", method="ggml")["components"]["model"]["tensors"]
    search = ag.convert(demo / "unet", tmp_path / "s.gguf", type="Q4_K_M")  # the default
    tensors = search["components"]["model"]["tensors"]
    assert search["method"] == "search"
    k4 = [n for n, t in tensors.items() if t["type"] == "Q4_K"]
    assert k4 and all(tensors[n]["encoder"] == "search" for n in k4)
    assert all(t["encoder"] == ("search" if t["type"] in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0") else "ggml")
               for t in tensors.values() if t["type"] not in ("F16", "F32", "BF16"))
    assert all(tensors[n]["relative_rmse"] <= ggml_mode[n]["relative_rmse"] + 1e-12 for n in k4)
    assert sum(tensors[n]["relative_rmse"] for n in k4) < 0.985 * sum(ggml_mode[n]["relative_rmse"] for n in k4)
    with pytest.raises(ParameterError, match="method must be 'ggml' or 'search'"):
        ag.convert(demo / "unet", tmp_path / "x.gguf", method="fast")


@pytest.mark.parametrize("mix", ["IQ4_NL", "IQ4_XS"])
def test_non_linear_types_are_written_and_read_by_gguf_py(demo, tmp_path, mix):
    report = ag.convert(demo / "unet", tmp_path / "u.gguf", type=mix)
    types = {t["type"] for t in report["components"]["model"]["tensors"].values()}
    assert mix in types
    reader = gguf.GGUFReader(str(tmp_path / "u.gguf"))
    assert field(reader, "general.file_type") == gguf.LlamaFileType[f"MOSTLY_{mix}"]
    with ag.open(tmp_path / "u.gguf") as ours:
        for t in reader.tensors:
            theirs = gguf_dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)
            assert np.array_equal(theirs, ours.dequantize(t.name).reshape(-1)), t.name


def test_cli_inspects_gguf_files(unet_q4km):
    path, _ = unet_q4km
    r = subprocess.run([sys.executable, "-m", "arrowquant", "inspect", path, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["architecture"] == "sd1" and doc["types"]["Q4_K"] > 10
    conv = next(t for t in doc["tensors"] if t["name"] == "conv_in.weight")
    assert conv == {"name": "conv_in.weight", "shape": [64, 4, 3, 3], "stored_shape": [64, 4, 3, 3], "type": "F16",
                    "bytes": 64 * 4 * 9 * 2}
    r = subprocess.run([sys.executable, "-m", "arrowquant", "inspect", path], capture_output=True, text=True)
    assert r.returncode == 0 and "GGUF, architecture sd1" in r.stdout


def test_validate_compares_gguf_files_and_folders_with_the_original(demo, tmp_path, unet_q4km):
    path, _ = unet_q4km
    report = aq.validate_quality(demo / "unet", path)
    from safetensors import safe_open
    with safe_open(str(demo / "unet" / "diffusion_pytorch_model.safetensors"), "np") as f:
        tensors = len(list(f.keys()))
    assert report["passed"] and report["problems"] == [] and len(report["layers"]) == tensors
    assert all(layer["threshold"] in (0.98, 0.999) for layer in report["layers"].values())
    ag.convert(demo, tmp_path / "sd", type="Q2_K")
    report = aq.validate_quality(demo, tmp_path / "sd")  # the VAE stayed safetensors: not compared
    assert not report["passed"] and all(k.startswith("unet/") for k in report["layers"])  # 2 bits: weights too far
    save_file({"model.diffusion_model.double_blocks.0.img_attn.proj.weight": np.ones((64, 256), np.float32),
               "first_stage_model.decoder.conv_in.weight": np.ones((64, 256), np.float32)}, str(tmp_path / "m.safetensors"))
    ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q8_0")
    report = aq.validate_quality(tmp_path / "m.safetensors", tmp_path / "m.gguf")
    assert report["passed"] and report["skipped"] == ["first_stage_model.decoder.conv_in.weight"]
    assert list(report["layers"]) == ["model.diffusion_model.double_blocks.0.img_attn.proj.weight"]


def test_a_zero_element_tensor_is_left_out_so_every_reader_takes_the_file(tmp_path):
    """Issue 22: a zero-element tensor was written, then refused by arrowquant.gguf.open (and so by
    inspect, dequantize and validate): it is now left out, and listed."""
    rng = np.random.default_rng(3)
    save_file({"double_blocks.0.img_attn.proj.weight": rng.standard_normal((64, 256)).astype(np.float32),
               "double_blocks.0.empty": np.zeros((0, 256), np.float32)}, str(tmp_path / "m.safetensors"))
    report = ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q8_0")
    assert report["components"]["model"]["tensors_dropped"] == ["double_blocks.0.empty"]
    with ag.open(tmp_path / "m.gguf") as f:
        assert list(f.tensors) == ["double_blocks.0.img_attn.proj.weight"]
    assert list(reader_tensors(tmp_path / "m.gguf")) == ["double_blocks.0.img_attn.proj.weight"]
    r = subprocess.run([sys.executable, "-m", "arrowquant", "dequantize", str(tmp_path / "m.gguf"),
                        str(tmp_path / "back.safetensors")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_tensor_named_like_the_safetensors_metadata_key_is_refused_not_lost(tmp_path):
    """Issue 22: a GGUF tensor named __metadata__ overwrote the safetensors header's reserved key on
    dequantize (exit 0, the tensor lost, the file refused by the safetensors package)."""
    data = np.arange(256, dtype=np.float32)
    name = b"__metadata__"
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", len(name)) + name
    header += struct.pack("<I", 1) + struct.pack("<Q", 256) + struct.pack("<IQ", 0, 0)
    (tmp_path / "m.gguf").write_bytes(header + b"\0" * (-len(header) % 32) + data.tobytes())
    r = subprocess.run([sys.executable, "-m", "arrowquant", "dequantize", str(tmp_path / "m.gguf"),
                        str(tmp_path / "back.safetensors")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "'__metadata__' cannot be written: safetensors reserves that header key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "back.safetensors").exists()


def test_integer_and_bool_buffers_are_left_out_with_the_reason_and_f64_is_narrowed_and_said(tmp_path):
    """Issue 20: an I64 position_ids buffer stopped the conversion at its first tensor; F64 was
    narrowed silently. No diffusion runtime reads integer GGUF tensors: they are left out, each kind
    of reason one line of the summary; F64 is narrowed to float32 with one warning."""
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((64, 256))
    save_file({"double_blocks.0.img_attn.proj.weight": weight,  # F64
               "position_ids": np.arange(512, dtype=np.int64).reshape(1, -1),
               "double_blocks.0.mask": np.ones((4, 4), bool)}, str(tmp_path / "m.safetensors"))
    with pytest.warns(UserWarning, match=r"1 F64 tensors narrowed to float32 first .*img_attn.proj.weight"):
        report = ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q8_0", arch="flux")
    comp = report["components"]["model"]
    assert sorted(comp["tensors_dropped"]) == ["double_blocks.0.mask", "position_ids"]
    assert comp["why_dropped"]["position_ids"].startswith("I64 buffer: ComfyUI-GGUF, diffusers and stable-diffusion")
    assert list(reader_tensors(tmp_path / "m.gguf")) == ["double_blocks.0.img_attn.proj.weight"]
    with ag.open(tmp_path / "m.gguf") as f:
        decoded = f.dequantize("double_blocks.0.img_attn.proj.weight")
    assert np.abs(decoded - weight.astype(np.float32)).max() < 0.02
    r = subprocess.run([sys.executable, "-m", "arrowquant", "gguf", str(tmp_path / "m.safetensors"),
                        str(tmp_path / "m2.gguf"), "--arch", "flux"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "model: left out 1 tensor (I64 buffer: " in r.stdout and "): position_ids" in r.stdout
    assert "model: left out 1 tensor (BOOL buffer: " in r.stdout
    assert r.stderr.count("F64 tensors narrowed") == 1
