"""Diffusion models end to end: config, sensitive-layer rules, fallback, validate_quality, Markov."""

import json
import math
import os

import numpy as np
import pytest
import safetensors
from safetensors.numpy import save_file

import arrowquant as aq
from arrowquant.demo import make_demo_model
from arrowquant.diffusion import DEFAULT_THRESHOLDS, DiffusionQuantConfig, edge_blocks, sensitivity


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    return make_demo_model(tmp_path_factory.mktemp("demo") / "model")


# -- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,bits,group,accuracy", [("edge", 2, 256, 0.65), ("local", 4, 128, 0.85),
                                                      ("cloud", 8, 64, 0.95)])
def test_profiles(name, bits, group, accuracy):
    c = DiffusionQuantConfig.from_profile(name)
    assert (c.bit_width, c.group_size, c.min_accuracy) == (bits, group, accuracy)
    assert DiffusionQuantConfig.from_dict(c.to_dict()) == c
    assert f"bit_width={bits}" in repr(c)


@pytest.mark.parametrize("kwargs,parameter", [
    ({"bit_width": 3}, "bit_width"), ({"group_size": 100}, "group_size"), ({"min_accuracy": 1.5}, "min_accuracy"),
    ({"sensitive_bit_width": 2, "bit_width": 4}, "sensitive_bit_width"), ({"fallback": "yes"}, "fallback"),
    ({"num_threads": 0}, "num_threads"), ({"method": "gptq"}, "method"), ({"include": 5}, "include"),
])
def test_bad_config_values_name_the_parameter(kwargs, parameter):
    with pytest.raises(aq.ParameterError, match=parameter):
        DiffusionQuantConfig(**kwargs)


def test_unknown_profile_and_fields():
    with pytest.raises(aq.ParameterError, match="profile must be one of 'edge', 'local', 'cloud'; got 'mobile'"):
        DiffusionQuantConfig.from_profile("mobile")
    with pytest.raises(aq.ParameterError, match=r"unknown DiffusionQuantConfig fields \['bits'\]"):
        DiffusionQuantConfig.from_dict({"bits": 4})


# -- sensitive-layer rules on real naming ------------------------------------------------------------

UNET = ["conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.resnets.0.conv1.weight",
        "down_blocks.1.attentions.0.proj_out.weight", "down_blocks.1.resnets.0.norm1.weight",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight", "up_blocks.2.resnets.0.conv1.weight",
        "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight", "conv_norm_out.weight", "conv_out.weight",
        "down_blocks.1.resnets.0.time_emb_proj.weight", "add_embedding.linear_1.weight"]
FLUX = ["x_embedder.weight", "context_embedder.weight", "time_text_embed.timestep_embedder.linear_1.weight",
        "transformer_blocks.0.attn.to_q.weight", "transformer_blocks.10.attn.to_q.weight",
        "transformer_blocks.18.norm1.linear.weight", "single_transformer_blocks.0.linear1.weight",
        "single_transformer_blocks.37.proj_out.weight", "norm_out.linear.weight", "proj_out.weight"]
DIT = ["pos_embed.proj.weight", "x_embedder.proj.weight", "t_embedder.mlp.0.weight", "y_embedder.embedding_table.weight",
       "blocks.0.attn.qkv.weight", "blocks.13.mlp.fc1.weight", "blocks.27.attn.proj.weight", "final_layer.linear.weight"]


@pytest.mark.parametrize("names,expected", [
    (UNET, {"conv_in.weight": "input/output layer", "time_embedding.linear_1.weight": "time/class embedding",
            "down_blocks.0.resnets.0.conv1.weight": "first block", "down_blocks.1.attentions.0.proj_out.weight": None,
            "down_blocks.1.resnets.0.norm1.weight": "normalization",
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight": None,
            "up_blocks.2.resnets.0.conv1.weight": None,
            "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight": "last block",
            "conv_norm_out.weight": "input/output layer", "conv_out.weight": "input/output layer",
            "down_blocks.1.resnets.0.time_emb_proj.weight": None,
            "add_embedding.linear_1.weight": "time/class embedding"}),
    (FLUX, {"x_embedder.weight": "input/output layer", "context_embedder.weight": "input/output layer",
            "time_text_embed.timestep_embedder.linear_1.weight": "time/class embedding",
            "transformer_blocks.0.attn.to_q.weight": "first block", "transformer_blocks.10.attn.to_q.weight": None,
            "transformer_blocks.18.norm1.linear.weight": "normalization",
            "single_transformer_blocks.0.linear1.weight": None,
            "single_transformer_blocks.37.proj_out.weight": "last block",
            "norm_out.linear.weight": "input/output layer", "proj_out.weight": "input/output layer"}),
    (DIT, {"pos_embed.proj.weight": "positional embedding", "x_embedder.proj.weight": "input/output layer",
           "t_embedder.mlp.0.weight": "time/class embedding", "y_embedder.embedding_table.weight": "time/class embedding",
           "blocks.0.attn.qkv.weight": "first block", "blocks.13.mlp.fc1.weight": None,
           "blocks.27.attn.proj.weight": "last block", "final_layer.linear.weight": "input/output layer"}),
])
def test_sensitive_layer_rules(names, expected):
    edges = edge_blocks(names)
    assert {n: sensitivity(n, edges) for n in names} == expected


# -- end to end ------------------------------------------------------------------------------------

def test_module_function_end_to_end(demo_model, tmp_path):
    out = tmp_path / "q"
    calls = []
    report = aq.quantize_diffusion_model(demo_model, out, DiffusionQuantConfig.from_profile("local"),
                                         progress_callback=lambda n, f: calls.append((n, f)))
    assert sorted(os.listdir(out)) == [".arrowquant-output", "model_index.json", "scheduler", "text_encoder", "tokenizer",
                                       "unet", "vae"]
    assert sorted(os.listdir(out / "unet")) == ["config.json", "diffusion_pytorch_model.aq"]
    for rel in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                "tokenizer/merges.txt"):
        assert (out / rel).read_bytes() == (demo_model / rel).read_bytes()
    assert [n for n, _ in calls][0].startswith(("text_encoder/", "unet/", "vae/"))
    assert [f for _, f in calls] == sorted(f for _, f in calls) and calls[-1][1] == pytest.approx(1.0)
    unet = report["components"]["unet"]
    assert unet["layers"]["conv_in.weight"]["bit_width"] == 8
    assert unet["layers"]["down_blocks.1.resnets.0.conv1.weight"]["bit_width"] == 4
    assert unet["layers"]["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"]["bit_width"] == 4
    assert unet["layers"]["up_blocks.2.resnets.0.conv1.weight"]["reason"] == "sensitive (last block)"
    assert report["overall"]["compression_ratio"] > 4 and report["overall"]["min_cosine"] > 0.98
    from safetensors.numpy import load_file
    assert report["overall"]["bytes_before"] == sum(
        a.nbytes for c, file in (("text_encoder", "model"), ("unet", "diffusion_pytorch_model"),
                                 ("vae", "diffusion_pytorch_model"))
        for a in load_file(str(demo_model / c / f"{file}.safetensors")).values())
    f = aq.open(out / "unet" / "diffusion_pytorch_model.aq")
    assert f.metadata["settings"]["diffusion_config"]["bit_width"] == 4
    assert not f.is_quantized("conv_in.bias")  # 1-D: carried through


def test_method_uses_the_instance_mode(demo_model, tmp_path):
    report = aq.ArrowQuantV2(mode="base").quantize_diffusion_model(demo_model / "unet", tmp_path / "unet_q")
    bits = {v["bit_width"] for v in report["components"]["unet"]["layers"].values()}
    assert bits == {4}  # base mode: no sensitive layers
    assert sorted(os.listdir(tmp_path / "unet_q")) == [".arrowquant-output", "config.json", "diffusion_pytorch_model.aq"]
    metrics = aq.ArrowQuantV2(mode="base")
    assert metrics.get_markov_metrics() is None
    metrics.quantize_diffusion_model(demo_model / "unet", tmp_path / "again")
    assert set(metrics.get_markov_metrics()["layers"]) == set(report["components"]["unet"]["layers"])


def outlier_layer(rng):
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    w.reshape(-1, 256)[:, 0] = 16 * np.where(np.arange(256) % 2 == 0, 1, -1)  # one outlier per group
    return w


def test_fallback_moves_a_heavy_tailed_layer_from_2_to_4_bits(tmp_path):
    rng = np.random.default_rng(0)
    save_file({"blocks.1.mlp.weight": outlier_layer(rng),
               "blocks.1.attn.weight": rng.standard_normal((64, 1024)).astype(np.float32)}, str(tmp_path / "m.safetensors"))
    config = DiffusionQuantConfig(bit_width=2, group_size=256, min_accuracy=0.9, keep_sensitive=False)
    report = aq.quantize_diffusion_model(tmp_path / "m.safetensors", tmp_path / "m.aq", config)
    layers = report["components"]["model"]["layers"]
    assert layers["blocks.1.mlp.weight"]["bit_width"] == 4 and layers["blocks.1.mlp.weight"]["cosine"] >= 0.9
    assert layers["blocks.1.attn.weight"]["bit_width"] == 2 or layers["blocks.1.attn.weight"]["cosine"] >= 0.9
    moved = [f for f in report["fallbacks"] if f["layer"] == "blocks.1.mlp.weight"]
    assert moved and moved[0]["from_bits"] == 2 and moved[0]["to_bits"] == 4 and moved[0]["cosine"] < 0.9
    assert aq.open(tmp_path / "m.aq").tensor("blocks.1.mlp.weight").bit_width == 4


def test_no_fallback_or_unreachable_accuracy_is_an_error_and_leaves_nothing(tmp_path, demo_model):
    rng = np.random.default_rng(1)
    save_file({"blocks.1.mlp.weight": outlier_layer(rng)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(aq.AccuracyError, match=r"layer 'blocks.1.mlp.weight'.*below min_accuracy 0.9 \(fallback is off\)"):
        aq.quantize_diffusion_model(tmp_path / "m.safetensors", tmp_path / "m.aq",
                                    DiffusionQuantConfig(bit_width=2, group_size=256, min_accuracy=0.9, fallback=False,
                                                         keep_sensitive=False))
    with pytest.raises(aq.AccuracyError, match="even at 8 bits"):
        aq.quantize_diffusion_model(demo_model, tmp_path / "out",
                                    DiffusionQuantConfig(bit_width=2, min_accuracy=0.99999999))
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_bad_inputs(tmp_path, demo_model):
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hi")
    with pytest.raises(aq.MissingFileError, match="not a model folder"):
        aq.quantize_diffusion_model(tmp_path / "notamodel", tmp_path / "o")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"],
                                                         "scheduler": ["diffusers", "PNDMScheduler"]}))
    (broken / "unet").mkdir()
    (broken / "unet" / "config.json").write_text("{}")
    with pytest.raises(aq.MissingFileError, match="component 'unet' \\(UNet2DConditionModel\\) has no .safetensors"):
        aq.quantize_diffusion_model(broken, tmp_path / "o")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("precious")
    with pytest.raises(aq.ParameterError, match="exists and is not an empty folder"):
        aq.quantize_diffusion_model(demo_model, busy)
    assert os.listdir(busy) == ["keep.txt"]
    # overwrite replaces only a folder an earlier arrowquant run wrote, never the user's own
    with pytest.raises(aq.ParameterError, match="was not written by arrowquant .* it holds keep.txt"):
        aq.quantize_diffusion_model(demo_model, busy, overwrite=True)
    assert os.listdir(busy) == ["keep.txt"]
    earlier = tmp_path / "earlier"
    aq.quantize_diffusion_model(demo_model, earlier)
    (earlier / "stale.txt").write_text("from the earlier run")
    aq.quantize_diffusion_model(demo_model, earlier, overwrite=True)
    assert "stale.txt" not in os.listdir(earlier) and "unet" in os.listdir(earlier)
    with pytest.raises(aq.ParameterError, match="config must be a DiffusionQuantConfig"):
        aq.quantize_diffusion_model(demo_model, tmp_path / "o", config={"bit_width": 4})
    assert not (tmp_path / "o").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging folders left


# -- validate_quality --------------------------------------------------------------------------------

def test_validate_quality_numbers_match_numpy(tmp_path):
    rng = np.random.default_rng(2)
    tensors = {"a.weight": rng.standard_normal((32, 256)).astype(np.float32),
               "b.weight": (rng.standard_t(3, (16, 512)) * 0.1).astype(np.float32), "b.bias": np.ones(16, np.float32)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2(group_size=64).quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq", bit_width=2)
    report = aq.validate_quality(tmp_path / "m.safetensors", tmp_path / "m.aq")
    f = aq.open(tmp_path / "m.aq")
    for name in ("a.weight", "b.weight"):
        x = tensors[name].astype(np.float64).ravel()
        y = f.dequantize(name).astype(np.float64).ravel()
        layer = report["layers"][name]
        assert layer["cosine"] == pytest.approx(x @ y / math.sqrt((x @ x) * (y @ y)), rel=1e-12)
        assert layer["relative_rmse"] == pytest.approx(np.linalg.norm(x - y) / np.linalg.norm(x), rel=1e-12)
        assert layer["sqnr_db"] == pytest.approx(10 * np.log10((x @ x) / ((x - y) @ (x - y))), rel=1e-12)
        assert layer["max_abs_error"] == pytest.approx(np.abs(x - y).max(), rel=1e-12)
        assert layer["threshold"] == DEFAULT_THRESHOLDS[2]
    assert report["min_cosine"] == pytest.approx(min(v["cosine"] for v in report["layers"].values()))
    assert report["passed"] == all(v["cosine"] >= DEFAULT_THRESHOLDS[2] for v in report["layers"].values())
    strict = aq.validate_quality(tmp_path / "m.safetensors", tmp_path / "m.aq", threshold=0.999)
    assert not strict["passed"] and set(strict["failed_layers"]) == {"a.weight", "b.weight"}


def test_validate_reports_mismatched_layers(tmp_path):
    rng = np.random.default_rng(3)
    save_file({"a.weight": rng.standard_normal((32, 64)).astype(np.float32),
               "gone.weight": rng.standard_normal((32, 64)).astype(np.float32)}, str(tmp_path / "orig.safetensors"))
    save_file({"a.weight": rng.standard_normal((64, 32)).astype(np.float32),
               "new.weight": rng.standard_normal((32, 64)).astype(np.float32)}, str(tmp_path / "other.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "other.safetensors", tmp_path / "other.aq")
    report = aq.validate_quality(tmp_path / "orig.safetensors", tmp_path / "other.aq")
    problems = {p["layer"]: p["problem"] for p in report["problems"]}
    assert problems == {"gone.weight": "missing in the quantized model", "new.weight": "not in the original model",
                        "a.weight": "shape [64, 32] differs from the original's [32, 64]"}
    assert not report["passed"]


def test_validate_a_whole_model_folder(demo_model, tmp_path):
    aq.quantize_diffusion_model(demo_model, tmp_path / "q", DiffusionQuantConfig.from_profile("local"))
    report = aq.validate_quality(demo_model, tmp_path / "q")
    assert report["passed"] and report["problems"] == []
    assert any(k.startswith("vae/") for k in report["layers"]) and any(k.startswith("unet/") for k in report["layers"])
    assert {v["threshold"] for v in report["layers"].values()} == {DEFAULT_THRESHOLDS[4], DEFAULT_THRESHOLDS[8]}
    # 2 bits without calibration ruin what a model computes (bench/functional_quality.py): the
    # default thresholds do not pass such layers
    aq.quantize_diffusion_model(demo_model, tmp_path / "q2", DiffusionQuantConfig.from_profile("edge", min_accuracy=None))
    report = aq.validate_quality(demo_model, tmp_path / "q2")
    assert not report["passed"] and all(report["layers"][k]["bit_width"] == 2 for k in report["failed_layers"])


# -- Markov metrics ----------------------------------------------------------------------------------

def test_markov_metrics_by_hand():
    q = aq.ArrowQuantV2(group_size=16)
    assert q.get_markov_metrics() is None
    # 4-bit asymmetric groups: [0..15] -> scale 1, zp 0; [0..30] -> scale 2, zp 0;
    # [-15..15] -> scale 2, zp 7.5; [0..15] -> scale 1, zp 0.
    row = np.concatenate([np.arange(16), np.arange(16) * 2, np.linspace(-15, 15, 16), np.arange(16)]).astype(np.float32)
    q.quantize(row.reshape(1, -1), 4, method="rtn")
    m = q.get_markov_metrics()
    layer = m["layers"]["weights"]
    # scale jumps 1.0, 0.0, 0.5; zero-point jumps 0, 0.5, 0.5 (of 15 levels)
    assert layer["boundaries"] == 3
    assert layer["smoothness_score"] == pytest.approx(1 - (1.0 + 0.5 + 1.0) / 6)
    assert layer["mean_boundary_score"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert layer["max_scale_jump"] == pytest.approx(1.0)
    assert (layer["high"], layer["medium"], layer["is_valid"]) == (1, 1, False)
    assert [(v["group"], v["severity"]) for v in layer["violations"]] == [(0, "high"), (2, "medium")]
    assert m["overall"]["violation_count"] == 2 and not m["overall"]["is_valid"]


def test_markov_single_group_rows_and_threshold():
    q = aq.ArrowQuantV2(group_size=64, markov_threshold=5.0)
    out = q.quantize_batch({"one_group": np.arange(64, dtype=np.float32).reshape(1, 64),
                            "smooth": np.tile(np.arange(64, dtype=np.float32), 4).reshape(1, 256)})
    assert set(out) == {"one_group", "smooth"}
    m = q.get_markov_metrics()
    assert m["layers"]["one_group"]["smoothness_score"] == 1.0 and m["layers"]["one_group"]["boundaries"] == 0
    assert m["layers"]["smooth"]["smoothness_score"] == 1.0 and m["layers"]["smooth"]["is_valid"]
    assert m["overall"]["boundaries"] == 3
    with pytest.raises(aq.ParameterError, match="markov_threshold"):
        aq.ArrowQuantV2(markov_threshold=0)


def test_markov_from_the_arrow_path():
    import pyarrow as pa
    q = aq.ArrowQuantV2(group_size=16)
    row = np.concatenate([np.arange(16), np.arange(16) * 2]).astype(np.float32)
    q.quantize_arrow(pa.table({"layer_name": ["x"], "weights": pa.array([row], pa.list_(pa.float32()))}), 4,
                     method="rtn")
    assert q.get_markov_metrics()["layers"]["x"]["max_scale_jump"] == pytest.approx(1.0)


def test_without_a_config_python_uses_the_clis_default(demo_model, tmp_path):
    """Issue 22: quantize_diffusion_model(src, out) wrote affine v1 while the docs and the CLI say
    the local profile (kquant, rtn) is the default."""
    import subprocess
    import sys
    aq.quantize_diffusion_model(demo_model / "unet", tmp_path / "py")
    r = subprocess.run([sys.executable, "-m", "arrowquant", "quantize", str(demo_model / "unet"), str(tmp_path / "cli"),
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    settings = [aq.open(tmp_path / out / "diffusion_pytorch_model.aq").metadata["settings"] for out in ("py", "cli")]
    assert settings[0]["scheme"] == "kquant" and settings[0]["method"] == "rtn" and settings[0]["bit_width"] == 4
    keys = ("bit_width", "scheme", "method", "rotate", "group_size", "min_accuracy", "mode")
    assert {k: settings[0][k] for k in keys} == {k: settings[1][k] for k in keys}


FLUX_BFL = ["double_blocks.0.img_attn.proj.weight", "double_blocks.3.img_attn.proj.weight", "img_in.weight",
            "txt_in.weight", "time_in.in_layer.weight", "vector_in.out_layer.weight", "guidance_in.in_layer.weight",
            "single_blocks.5.linear1.weight", "final_layer.linear.weight"]
WAN = ["blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation", "patch_embedding.weight",
       "blocks.3.modulation", "blocks.3.self_attn.q.weight", "blocks.9.ffn.0.weight", "time_projection.1.weight",
       "head.head.weight", "img_emb.proj.1.weight"]


@pytest.mark.parametrize("names,protected,quantized", [
    (FLUX_BFL, ["img_in.weight", "txt_in.weight", "time_in.in_layer.weight", "vector_in.out_layer.weight",
                "guidance_in.in_layer.weight", "final_layer.linear.weight"],
     ["double_blocks.3.img_attn.proj.weight", "single_blocks.5.linear1.weight"]),
    (WAN, ["text_embedding.2.weight", "head.modulation", "patch_embedding.weight", "blocks.3.modulation",
           "time_projection.1.weight", "head.head.weight", "img_emb.proj.1.weight"], ["blocks.3.self_attn.q.weight"]),
    (["model.diffusion_model." + n for n in WAN], ["model.diffusion_model.patch_embedding.weight"],
     ["model.diffusion_model.blocks.3.self_attn.q.weight"]),
])
def test_aq_protects_the_layers_gguf_keeps_high_for_the_architecture(names, protected, quantized):
    """Flux's original (BFL) names and Wan's: the layers the GGUF policy keeps in 16/32 bits for the
    detected architecture stay unquantized in .aq's diffusion mode too."""
    from arrowquant.diffusion import bit_width_rule
    config = DiffusionQuantConfig(bit_width=4)
    choose = bit_width_rule(config, "diffusion", names)
    for name in protected:
        bits, reason = choose(name, None)
        assert bits == config.sensitive_bit_width and reason.startswith("sensitive"), (name, bits, reason)
    for name in quantized:
        assert choose(name, None) == (4, "default"), name
