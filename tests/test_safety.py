"""Never read or write outside what the user named, never destroy the user's data: names from files,
symlinks, outputs against inputs, overwrites, atomic publishing under interruption, variants."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

import arrowquant as aq
from arrowquant import paths
from arrowquant.errors import FileFormatError, MissingFileError, ParameterError, UnsafePathError


def weights(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return {f"blocks.{i}.attn.to_q.weight": (0.05 * rng.standard_normal((64, 64))).astype(np.float32)
            for i in range(n)}


def component(folder, seed=0, name="diffusion_pytorch_model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights(seed), str(folder / name))
    (folder / "config.json").write_text(json.dumps({"_class_name": "Transformer2DModel"}))
    return folder


def diffusers_model(root):
    component(root / "transformer")
    (root / "scheduler").mkdir(parents=True)
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline",
                                                       "transformer": ["diffusers", "Transformer2DModel"],
                                                       "scheduler": ["diffusers", "DDIMScheduler"]}))
    return root


def snapshot(root):
    """Every file under root with its bytes (links as ('link', target)), to prove nothing changed."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[p] = f.read()
    return out


def hidden_leftovers(folder):
    return [p for p in os.listdir(folder) if p.endswith(".partial")]


# -- names read from files are names, not paths --------------------------------------------------------

@pytest.mark.parametrize("bad_name", ["../victim", "/ABSOLUTE"])
def test_component_names_that_leave_the_model_are_refused(tmp_path, bad_name):
    victim = component(tmp_path / "victim")
    model = tmp_path / "model"
    diffusers_model(model)
    name = bad_name.replace("/ABSOLUTE", str(victim))
    index = json.loads((model / "model_index.json").read_text())
    index[name] = ["diffusers", "Transformer2DModel"]
    (model / "model_index.json").write_text(json.dumps(index))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafePathError, match="model_index.json: component"):
        aq.quantize_diffusion_model(model, tmp_path / "out")
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "link.safetensors"])
def test_index_shards_that_leave_the_folder_are_refused(tmp_path, shard):
    secret = tmp_path / "outside.safetensors"
    save_file(weights(1), str(secret))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(weights(0), str(ckpt / "model-00001-of-00001.safetensors"))
    (ckpt / "link.safetensors").symlink_to(secret)
    index = {"weight_map": {"blocks.0.attn.to_q.weight": shard}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafePathError, match="shard") as e:
        aq.ArrowQuantV2().quantize_from_safetensors(ckpt / "model.safetensors.index.json", tmp_path / "o.aq")
    assert "root:" not in str(e.value)  # nothing of the named file is echoed
    assert not (tmp_path / "o.aq").exists()


def test_weight_files_in_a_folder_that_link_outside_are_refused(tmp_path):
    secret = tmp_path / "elsewhere.safetensors"
    save_file(weights(1), str(secret))
    folder = tmp_path / "comp"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(secret)
    with pytest.raises(UnsafePathError, match="leads outside"):
        aq.ArrowQuantV2().quantize_from_safetensors(folder, tmp_path / "o.aq")


def test_path_inside_accepts_plain_names_and_links_within(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / "l").symlink_to("a")
    assert paths.path_inside(tmp_path, "a/f", "t") == tmp_path / "a" / "f"
    assert paths.path_inside(tmp_path, "l/f", "t") == tmp_path / "l" / "f"
    for bad in ["", "a/../../x", "./a", "a//f", "/a", "\x00"]:
        with pytest.raises(UnsafePathError):
            paths.path_inside(tmp_path, bad, "t")


# -- symlinks in model folders ---------------------------------------------------------------------------

def test_symlink_to_a_file_outside_the_model_is_refused(tmp_path):
    model = diffusers_model(tmp_path / "model")
    key = tmp_path / "id_rsa"
    key.write_text("PRIVATE KEY")
    (model / "tokenizer").mkdir()
    (model / "tokenizer" / "vocab.json").symlink_to(key)
    with pytest.raises(UnsafePathError, match="vocab.json: is a symlink .* leads outside the model folder"):
        aq.quantize_diffusion_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not hidden_leftovers(tmp_path)


def test_symlinks_inside_the_model_stay_links_and_loops_are_not_followed(tmp_path):
    model = diffusers_model(tmp_path / "model")
    tok = model / "tokenizer"
    tok.mkdir()
    (tok / "vocab.json").write_text("{}")
    (tok / "vocab-link.json").symlink_to("vocab.json")
    (tok / "up").symlink_to("..")           # loops: model/tokenizer/up -> model
    (tok / "up2").symlink_to("../tokenizer")  # and again
    out = tmp_path / "out"
    aq.quantize_diffusion_model(model, out)
    assert os.path.islink(out / "tokenizer" / "vocab-link.json")
    assert (out / "tokenizer" / "vocab-link.json").read_text() == "{}"
    assert os.path.islink(out / "tokenizer" / "up") and os.readlink(out / "tokenizer" / "up") == ".."
    assert os.path.realpath(out / "tokenizer" / "up2") == os.path.realpath(out / "tokenizer")


# -- outputs against inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_output_that_is_contains_or_lies_inside_the_input_is_refused(tmp_path, where):
    model = diffusers_model(tmp_path / "sd")
    (tmp_path / "other.txt").write_text("mine")
    output = {"same": model, "parent": tmp_path, "inside": model / "quantized"}[where]
    before = snapshot(tmp_path)
    with pytest.raises(ParameterError, match="input"):
        aq.quantize_diffusion_model(model, output, overwrite=True)
    assert snapshot(tmp_path) == before


def test_cli_quantize_into_itself_keeps_the_weights(tmp_path):
    model = diffusers_model(tmp_path / "sd")
    before = snapshot(model)
    r = subprocess.run([sys.executable, "-m", "arrowquant", "quantize", model, model, "--overwrite"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "would overwrite the input" in r.stderr
    assert snapshot(model) == before


@pytest.mark.parametrize("target", ["important.txt", "model.safetensors.index.json", "model.safetensors"])
def test_quantize_never_replaces_an_existing_file_without_overwrite(tmp_path, target):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(weights(0), str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "model.safetensors" for n in weights(0)}}))
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    (out_dir / "important.txt").write_text("precious")
    if target == "important.txt":
        out, source = out_dir / target, ckpt / "model.safetensors"
    else:  # the index it is reading, or a shard: never, not even with overwrite
        out, source = ckpt / target, ckpt / "model.safetensors.index.json"
    before = snapshot(tmp_path)
    with pytest.raises(ParameterError, match="exists|would overwrite the input"):
        aq.ArrowQuantV2().quantize_from_safetensors(source, out)
    if target != "important.txt":
        with pytest.raises(ParameterError, match="would overwrite the input"):
            aq.ArrowQuantV2().quantize_from_safetensors(source, out, overwrite=True)
    assert snapshot(tmp_path) == before


def test_dequantize_and_to_safetensors_refuse_existing_files_too(tmp_path):
    save_file(weights(0), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    (tmp_path / "keep.safetensors").write_bytes(b"mine")
    with pytest.raises(ParameterError, match="exists"):
        aq.open(tmp_path / "m.aq").to_safetensors(tmp_path / "keep.safetensors")
    assert (tmp_path / "keep.safetensors").read_bytes() == b"mine"
    aq.open(tmp_path / "m.aq").to_safetensors(tmp_path / "keep.safetensors", overwrite=True)
    assert (tmp_path / "keep.safetensors").read_bytes() != b"mine"


def test_an_output_name_with_the_wrong_extension_warns(tmp_path):
    save_file(weights(0), str(tmp_path / "m.safetensors"))
    with pytest.warns(UserWarning, match="does not end in .aq"):
        report = aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m-q.safetensors")
    assert any("does not end in .aq" in w for w in report["warnings"])
    r = subprocess.run([sys.executable, "-m", "arrowquant", "dequantize", tmp_path / "m-q.safetensors",
                        tmp_path / "back.aq"], capture_output=True, text=True)
    assert r.returncode == 0 and "warning: " in r.stderr and "does not end in .safetensors" in r.stderr


# -- atomic publishing -----------------------------------------------------------------------------------

def _old_and_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / paths.OUTPUT_MARKER).write_text("")
    (target / "old.txt").write_text("old")
    staging = tmp_path / ".out.1.partial"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    return staging, target


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_an_interrupt_during_the_folder_publish_leaves_the_old_or_the_new(tmp_path, monkeypatch, atomic_exchange):
    if not atomic_exchange:
        monkeypatch.setattr(paths, "_renameat2", None)
    staging, target = _old_and_staging(tmp_path)
    calls = {"n": 0}
    real_rename = os.rename

    def interrupted_second_rename(a, b):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_rename(a, b)

    monkeypatch.setattr(paths.os, "rename", interrupted_second_rename)
    try:
        paths.publish(staging, target, overwrite=True)
    except KeyboardInterrupt:
        pass
    assert sorted(os.listdir(target)) in ([paths.OUTPUT_MARKER, "old.txt"], ["new.txt"])
    assert not [p for p in os.listdir(tmp_path) if ".old" in p]


def test_sigterm_mid_run_removes_every_partial(tmp_path):
    model = diffusers_model(tmp_path / "model")
    script = textwrap.dedent(f"""
        import os, signal, arrowquant as aq
        aq.quantize_diffusion_model({str(model)!r}, {str(tmp_path / 'out')!r},
                                    progress_callback=lambda n, f: os.kill(os.getpid(), signal.SIGTERM))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode != 0 and "Terminated" in r.stderr
    assert not (tmp_path / "out").exists() and hidden_leftovers(tmp_path) == []
    r = subprocess.run([sys.executable, "-c", "import os, signal, sys\n"
                        "from arrowquant.cli import main\n"
                        "import arrowquant.diffusion as d\n"
                        "d.time.perf_counter = lambda: os.kill(os.getpid(), signal.SIGTERM) or 0.0\n"
                        f"sys.exit(main(['quantize', {str(model)!r}, {str(tmp_path / 'out')!r}]))"],
                       capture_output=True, text=True)
    assert r.returncode == 143 and "terminated" in r.stderr and hidden_leftovers(tmp_path) == []


def test_partials_of_dead_processes_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    save_file(weights(0), str(tmp_path / "m.safetensors"))
    stale_file = tmp_path / f".m.aq.{dead.pid}.partial"
    stale_file.write_bytes(b"half")
    alive = tmp_path / f".m.aq.{os.getppid()}.partial"  # a live process's: left alone
    alive.write_bytes(b"busy")
    with pytest.warns(UserWarning, match="partial output"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    assert not stale_file.exists() and alive.exists()


# -- which files are the checkpoint ------------------------------------------------------------------

def test_variant_files_are_not_merged_as_shards(tmp_path):
    comp = component(tmp_path / "unet", seed=0)
    fp16 = {k: v.astype(np.float16) for k, v in weights(1).items()}
    save_file(fp16, str(comp / "diffusion_pytorch_model.fp16.safetensors"))
    out = tmp_path / "q"
    report = aq.quantize_diffusion_model(comp, out)
    f = aq.open(out / "diffusion_pytorch_model.aq")
    assert len(f) == 3 and f.tensor("blocks.0.attn.to_q.weight").source_dtype == "F32"
    assert not (out / "diffusion_pytorch_model.fp16.safetensors").exists()  # weights are not copied
    assert report["components"]["unet"]["output"] == str(out / "diffusion_pytorch_model.aq")
    aq.quantize_diffusion_model(comp, tmp_path / "q16", variant="fp16")
    assert aq.open(tmp_path / "q16" / "diffusion_pytorch_model.aq").tensor(
        "blocks.0.attn.to_q.weight").source_dtype == "F16"
    with pytest.raises(MissingFileError, match="no weights of variant 'bf16'"):
        aq.quantize_diffusion_model(comp, tmp_path / "qb", variant="bf16")


def test_two_shards_defining_one_tensor_are_refused_before_writing(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file(weights(0), str(folder / "a.safetensors"))
    save_file(weights(1, n=1), str(folder / "b.safetensors"))
    with pytest.raises(FileFormatError, match="'blocks.0.attn.to_q.weight' is also in"):
        aq.ArrowQuantV2().quantize_from_safetensors(folder, tmp_path / "o.aq")
    assert not (tmp_path / "o.aq").exists() and not hidden_leftovers(tmp_path)


def test_index_naming_a_missing_tensor_is_an_error(tmp_path):
    save_file(weights(0), str(tmp_path / "s1.safetensors"))
    wm = {n: "s1.safetensors" for n in weights(0)} | {"ghost.weight": "s1.safetensors"}
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(FileFormatError, match="names tensor 'ghost.weight' in s1.safetensors, but no shard holds it"):
        aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors.index.json", tmp_path / "o.aq")


def test_component_folder_keeps_its_subfolders(tmp_path):
    comp = component(tmp_path / "minilm", name="model.safetensors")
    (comp / "1_Pooling").mkdir()
    (comp / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    aq.ArrowQuantV2(mode="base").quantize_diffusion_model(comp, tmp_path / "q")
    assert (tmp_path / "q" / "1_Pooling" / "config.json").read_text() == '{"pooling_mode_mean_tokens": true}'
    assert (tmp_path / "q" / "model.aq").is_file()


def test_diffusion_mode_on_a_model_without_diffusion_names_says_so(tmp_path):
    comp = tmp_path / "llm"
    comp.mkdir()
    save_file({"encoder.layer.0.attention.query.weight": np.ones((64, 64), np.float32)}, str(comp / "model.safetensors"))
    with pytest.warns(UserWarning, match="mode='base'"):
        report = aq.quantize_diffusion_model(comp, tmp_path / "q")
    assert report["warnings"]


def test_an_old_output_moved_aside_by_a_dead_publish_is_restored(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".out.{dead.pid}.old.partial"
    aside.mkdir()
    (aside / "model.aq").write_text("the earlier output")
    with pytest.warns(UserWarning, match="restored"):
        paths.remove_stale_partials(tmp_path / "out")
    assert (tmp_path / "out" / "model.aq").read_text() == "the earlier output" and not aside.exists()


def test_dequantize_refuses_an_aq_link_that_leaves_the_folder(tmp_path):
    save_file(weights(0), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "model.aq").symlink_to(tmp_path / "m.aq")
    r = subprocess.run([sys.executable, "-m", "arrowquant", "dequantize", folder, tmp_path / "back"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "leads outside" in r.stderr and not (tmp_path / "back").exists()


def test_an_interrupt_between_the_two_renames_of_a_publish_waits_for_both(tmp_path, monkeypatch):
    """Round two: where renameat2's exchange is missing, Ctrl-C right after the old output was
    moved aside left the output path empty until a later run. The interrupt now arrives after
    the new output is in place, and the old one is gone."""
    import signal
    target, staging = tmp_path / "out", tmp_path / ".out.new"
    for folder, text in ((target, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "model.aq").write_text(text)
    monkeypatch.setattr(paths, "_rename2", lambda *a: False)
    real_rename, calls = os.rename, []

    def rename_then_interrupt(source, destination):
        real_rename(source, destination)
        calls.append(destination)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C with the old output aside, the new one not yet in

    monkeypatch.setattr(os, "rename", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        paths.publish(staging, target, overwrite=True)
    assert len(calls) == 2 and (target / "model.aq").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
