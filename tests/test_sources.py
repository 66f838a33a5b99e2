"""Paths that are not safetensors: one line saying what they are and what to do, and PyTorch
pickles read only on an explicit opt-in, through torch.load(weights_only=True)."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import arrowquant as aq
import arrowquant.gguf as ag
from arrowquant.errors import FileFormatError, MissingFileError


def cli(*args, cwd=None):
    env = dict(os.environ)
    if env.get("PYTHONPATH"):  # a source checkout on the path stays on it from another folder
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep))
    return subprocess.run([sys.executable, "-m", "arrowquant", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_a_hub_id_is_told_to_be_downloaded_first(tmp_path):
    for command in ("quantize", "gguf"):
        r = cli(command, "black-forest-labs/FLUX.1-dev", tmp_path / "out", cwd=tmp_path)
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1, r.stderr
        assert "if this is a Hugging Face Hub id, download it first" in r.stderr
    (tmp_path / "black-forest-labs").mkdir()  # its first part exists here: a local path that is missing
    r = cli("gguf", "black-forest-labs/FLUX.1-dev", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 1 and "Hub id" not in r.stderr and "no such file or directory" in r.stderr
    with pytest.raises(MissingFileError, match="huggingface-cli download org/model --local-dir model"):
        ag.convert("org/model", tmp_path / "out.gguf")


def test_a_gguf_file_is_named_as_such(tmp_path):
    save_file({"double_blocks.0.img_attn.proj.weight": np.ones((64, 256), np.float32)}, str(tmp_path / "m.safetensors"))
    ag.convert(tmp_path / "m.safetensors", tmp_path / "m.gguf", type="Q8_0")
    r = cli("quantize", tmp_path / "m.gguf", tmp_path / "m.aq")
    assert r.returncode == 1 and "a GGUF file, not safetensors; decode it to safetensors first" in r.stderr
    assert not (tmp_path / "m.aq").exists()


torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")


def tensors_of(path):
    """{name: (type, bytes)} as gguf-py reads them (the order of the tensors may differ)."""
    return {t.name: (t.tensor_type.name, bytes(np.asarray(t.data).tobytes())) for t in gguf.GGUFReader(path).tensors}


def flux_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"double_blocks.0.img_attn.proj.weight": torch.randn(256, 512, generator=g).to(torch.bfloat16),
            "double_blocks.0.img_mlp.0.weight": torch.randn(256, 256, generator=g),
            "double_blocks.0.img_attn.norm.query_norm.scale": torch.randn(64, generator=g),
            "position_ids": torch.arange(77).reshape(1, -1)}


@pytest.mark.parametrize("name,wrap", [("model.ckpt", True), ("model.pt", False)])
def test_pickles_need_allow_pickle_and_then_give_the_safetensors_bytes(tmp_path, name, wrap):
    state = flux_state()
    torch.save({"state_dict": state, "epoch": 3} if wrap else state, tmp_path / name)
    from safetensors.torch import save_file as torch_save_file
    torch_save_file(state, str(tmp_path / "same.safetensors"))

    r = cli("gguf", tmp_path / name, tmp_path / "m.gguf")
    assert r.returncode == 1 and "is a PyTorch pickle checkpoint" in r.stderr and "--allow-pickle" in r.stderr
    with pytest.raises(FileFormatError, match="allow_pickle=True"):
        aq.quantize_diffusion_model(tmp_path / name, tmp_path / "m.aq")
    assert sorted(os.listdir(tmp_path)) == sorted([name, "same.safetensors"])

    assert cli("gguf", tmp_path / name, tmp_path / "m.gguf", "--allow-pickle", "--type", "Q8_0").returncode == 0
    ag.convert(tmp_path / "same.safetensors", tmp_path / "same.gguf", type="Q8_0")
    assert tensors_of(tmp_path / "m.gguf") == tensors_of(tmp_path / "same.gguf")
    report = aq.quantize_diffusion_model(tmp_path / name, tmp_path / "m.aq", allow_pickle=True)
    assert report["model"] == str(tmp_path / name) and report["overall"]["layers_quantized"] == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".arrowquant")]  # the twin is gone


def test_a_pickle_with_code_in_it_is_refused_even_when_allowed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(FileFormatError, match=r"evil.pt: torch.load\(weights_only=True\) refused it"):
        ag.convert(tmp_path / "evil.pt", tmp_path / "m.gguf", allow_pickle=True)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "m.gguf").exists()


def test_a_folder_of_bin_weights_is_read_with_its_config(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    torch.save(flux_state(), folder / "diffusion_pytorch_model.bin")
    (folder / "config.json").write_text('{"_class_name": "FluxTransformer2DModel"}')
    with pytest.raises(FileFormatError, match=r"holds PyTorch pickle weights \(diffusion_pytorch_model.bin\)"):
        ag.convert(folder, tmp_path / "m.gguf")
    report = ag.convert(folder, tmp_path / "m.gguf", type="Q8_0", allow_pickle=True)
    assert report["components"]["model"]["architecture"] == "flux"


def test_a_safetensors_file_whose_header_length_looks_like_a_pickle_opcode_is_safetensors(tmp_path):
    """A header of 0x0280 bytes starts the file with 80 02, pickle protocol 2's opening bytes."""
    from arrowquant.sources import file_kind
    for n in range(1, 1400):  # headers of 64 to ~1,500 bytes, 640 (80 02 ..) among them
        save_file({"w" * n: np.ones(4, np.float32)}, str(tmp_path / "m.safetensors"))
        assert file_kind(tmp_path / "m.safetensors") == "safetensors"
