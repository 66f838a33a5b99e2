"""The arrowquant command: exit codes, --json, progress silent when piped, one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors

import arrowquant.errors as aq_errors
from arrowquant.demo import make_demo_model


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "arrowquant.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_demo_model(tmp_path_factory.mktemp("cli") / "model")


@pytest.fixture(scope="module")
def quantized(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_out") / "q"
    r = run("quantize", model, out, "--profile", "local", "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_quantize_json_and_silent_progress_when_piped(quantized):
    out, report = quantized
    assert report["config"]["bit_width"] == 4 and report["config"]["min_accuracy"] == 0.85
    assert set(report["components"]) == {"text_encoder", "unet", "vae"}
    assert (out / "unet" / "diffusion_pytorch_model.aq").is_file()


def test_quantize_prints_a_summary_and_no_progress_bar_when_piped(model, tmp_path):
    r = run("quantize", model, tmp_path / "q", "--bits", "8", "--method", "rtn")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "smaller" in r.stdout and str(tmp_path / "q") in r.stdout
    assert r.stderr == ""  # stderr is not a terminal here: no progress bar
    r = run("quantize", model, tmp_path / "q", "--bits", "8", "--method", "rtn", "--overwrite", "--layers")
    assert r.returncode == 0, r.stderr
    assert "component" in r.stdout and "total" in r.stdout and "layers by bit width" in r.stdout


def test_inspect_and_validate(quantized, model):
    out, _ = quantized
    r = run("inspect", out / "unet" / "diffusion_pytorch_model.aq", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["metadata"]["format"] == "arrowquant.aq" and info["layers_quantized"] > 100
    assert {layer["bit_width"] for layer in info["layers"] if layer["quantized"]} == {4, 8}
    r = run("inspect", out / "unet" / "diffusion_pytorch_model.aq")
    assert r.returncode == 0 and "carried through" in r.stdout
    r = run("validate", model, out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["passed"] is True
    r = run("validate", model, out, "--threshold", "0.999999")
    assert r.returncode == 1 and "FAILED" in r.stdout


def test_dequantize_folder_back_to_safetensors(quantized, tmp_path):
    out, _ = quantized
    r = run("dequantize", out, tmp_path / "restored", "--json")
    assert r.returncode == 0, r.stderr
    restored = tmp_path / "restored" / "unet" / "diffusion_pytorch_model.safetensors"
    with open(restored, "rb") as f:
        tensors = dict(safetensors.deserialize(f.read()))
    assert tensors["conv_in.weight"]["dtype"] == "F32" and tensors["conv_in.weight"]["shape"] == [64, 4, 3, 3]
    assert (tmp_path / "restored" / "unet" / "config.json").is_file()
    r = run("dequantize", out / "vae" / "diffusion_pytorch_model.aq", tmp_path / "vae16.safetensors", "--dtype", "float16")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "vae16.safetensors", "rb") as f:
        tensors = dict(safetensors.deserialize(f.read()))
    assert tensors["decoder.up_blocks.0.resnets.0.conv1.weight"]["dtype"] == "F16"  # quantized: converted
    assert tensors["decoder.conv_out.weight"]["dtype"] == "F16"  # 864 elements, carried: converted too


@pytest.mark.parametrize("args", [["quantize"], ["frobnicate"], ["quantize", "a", "b", "--bits", "7"], []])
def test_usage_errors_exit_2(args):
    assert run(*args).returncode == 2


def test_user_errors_are_one_line_and_exit_1(tmp_path, model):
    r = run("quantize", tmp_path / "missing", tmp_path / "o")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "missing: no such file or directory" in r.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    r = run("quantize", model, busy)
    assert r.returncode == 1 and "--overwrite" in r.stderr
    r = run("quantize", model, tmp_path / "o2", "--bits", "4", "--sensitive-bits", "2")
    assert r.returncode == 1 and "sensitive_bit_width" in r.stderr


def test_demo_json():
    r = run("demo", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["validate"]["passed"] is True
    assert doc["quantize"]["config"]["bit_width"] == 4


def test_python_dash_m_and_help_with_defaults_and_examples():
    r = subprocess.run([sys.executable, "-m", "arrowquant", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "examples:" in r.stdout
    for command in ("quantize", "dequantize", "validate", "inspect", "demo"):
        r = subprocess.run([sys.executable, "-m", "arrowquant", command, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "examples:" in r.stdout, command
    r = run("quantize", "--help")
    assert "edge: 2-bit, group 256" in r.stdout and "(default: diffusion)" in r.stdout and "--variant" in r.stdout


def test_inspect_quiet_is_quiet_and_a_closed_pipe_is_not_an_error(quantized):
    out, _ = quantized
    aq_file = out / "unet" / "diffusion_pytorch_model.aq"
    r = run("inspect", aq_file, "--quiet")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    pipeline = subprocess.run(f"{sys.executable} -m arrowquant inspect {aq_file} | head -1; "
                              "echo \"status=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                              capture_output=True, text=True)
    assert "status=0" in pipeline.stdout and "Broken pipe" not in pipeline.stderr and pipeline.stderr == ""


def test_json_reports_final_paths_and_quantize_and_validate_agree_on_the_ratio(quantized, model):
    out, report = quantized
    assert report["components"]["unet"]["output"] == str(out / "unet" / "diffusion_pytorch_model.aq")
    assert ".partial" not in json.dumps(report)
    r = run("validate", model, out, "--json")
    validation = json.loads(r.stdout)
    assert validation["compression_ratio"] == pytest.approx(report["overall"]["compression_ratio"])
    assert validation["checks"] == "weight cosine per layer"
    r = run("validate", model, out)
    assert "checked: weight cosine per layer" in r.stdout and "functional check" in r.stdout
    assert "source tensor bytes / .aq bytes" in r.stdout


def test_progress_bars_on_a_terminal(quantized, model, tmp_path):
    import pty
    out, _ = quantized

    def on_a_terminal(*args):
        primary, secondary = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "arrowquant", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=secondary)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        assert p.wait() == 0
        return seen.decode(errors="replace")

    shown = on_a_terminal("dequantize", out, tmp_path / "restored")
    assert "dequantize:" in shown and "100%" in shown or "B/s" in shown
    shown = on_a_terminal("validate", model, out)
    assert "validate:" in shown


def test_demo_prints_a_summary_and_no_path_that_it_deletes(tmp_path):
    r = run("demo")
    assert r.returncode == 0, r.stderr
    assert "/arrowquant-demo-" not in r.stdout and "per-layer tables with --layers" in r.stdout
    assert "SQNR dB" not in r.stdout and "-----" not in r.stdout  # no tables without --layers
    assert "next:" in r.stdout
    r = run("demo", "--workdir", tmp_path / "d", "--layers")
    assert r.returncode == 0 and "SQNR dB" in r.stdout and f"arrowquant inspect {tmp_path / 'd'}" in r.stdout
    assert (tmp_path / "d" / "quantized" / "unet" / "diffusion_pytorch_model.aq").is_file()


def test_manners_inspect_names_what_it_reads_validate_names_the_pairing_gguf_warns_of_a_gguf_named_folder(
        model, tmp_path):
    """Issue 22 item 9: inspect x.safetensors said "not a readable Arrow IPC (.aq) file"; validate of
    a pipeline folder against one component's GGUF said the folder "holds no .safetensors files"; a
    diffusers folder written to whole.gguf got no word."""
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    r = run("inspect", weights)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "a safetensors file; inspect reads what arrowquant writes: .aq files (quantize) and .gguf files" in r.stderr
    assert run("gguf", model / "unet", tmp_path / "unet.gguf", "--type", "Q8_0").returncode == 0
    r = run("validate", model, tmp_path / "unet.gguf")
    assert r.returncode == 1 and "is a diffusers folder (components text_encoder, unet, vae)" in r.stderr
    assert f"pass the component folder it was made from (e.g. {model / 'unet'})" in r.stderr
    r = run("gguf", model, tmp_path / "whole.gguf", "--type", "Q8_0")
    assert r.returncode == 0 and "whole.gguf: a diffusers folder becomes a folder" in r.stderr
    assert (tmp_path / "whole.gguf").is_dir()


def test_dequantize_of_an_unquantized_model_is_an_error_not_a_copy(model, tmp_path):
    """Issue 22 item 9: dequantize of an unquantized model exited 0 and copied 55 MB."""
    r = run("dequantize", model, tmp_path / "restored")
    assert r.returncode == 1 and "holds no .aq file, nothing to dequantize" in r.stderr
    r = run("dequantize", model / "unet" / "diffusion_pytorch_model.safetensors", tmp_path / "r.safetensors")
    assert r.returncode == 1 and "a safetensors file, not quantized; dequantize reads .aq and .gguf files" in r.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, expected", [
    (["quantize", "M", "O", "--threads", "0"], "argument --threads: must be a positive whole number; got '0'"),
    (["quantize", "M", "O", "--group-size", "7"], "argument --group-size: must be a power of two from 16 to 4096"),
    (["quantize", "M", "O", "--min-accuracy", "2"], "argument --min-accuracy: must be a cosine similarity in (0, 1]"),
    (["validate", "M", "O", "--threshold", "abc"], "argument --threshold: must be a cosine similarity"),
    (["gguf", "M", "O", "--threads", "-2"], "argument --threads: must be a positive whole number; got '-2'"),
    (["gguf", "M", "O", "--type", "Q4KM"], "argument --type: must be one of F32, F16"),
    (["gguf", "M", "O", "--type-for", "x"], "argument --type-for: takes GLOB=TYPE, e.g. '*.to_out.*=Q8_0'; got 'x'"),
    (["gguf", "M", "O", "--type-for", "*.x=Q9_K"], "argument --type-for: 'Q9_K' is not a GGUF tensor type"),
    (["gguf", "M", "O", "--tensor-type", "(=Q8_0"], "argument --tensor-type: '(' is not a regular expression"),
    (["gguf", "M", "O", "--output-tensor-type", "q8-0"], "(did you mean Q8_0?)"),
    (["gguf", "M", "O", "--token-embedding-type", "Q4KM"], "'Q4KM' is not a GGUF tensor type"),
    (["gguf", "M", "O", "--arch", "fluxx"], "got 'fluxx' (did you mean flux?)"),
])
def test_a_bad_option_value_is_a_usage_error_naming_the_option(argv, expected, capsys, tmp_path):
    """Round two: messages named Python arguments (num_threads, type_for) and exited 1; a bad
    option value is a usage error (exit 2) naming the option, before anything is read."""
    from arrowquant.cli import main
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / a) if a in ("M", "O") else a for a in argv])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and expected in err, err
    assert not any(word in err for word in ("num_threads", "type_for", "group_size", "min_accuracy", "Traceback"))
    if argv[-1] == "Q4KM" and argv[-2] == "--type":
        assert "(did you mean Q4_K_M?)" in err
    assert not (tmp_path / "O").exists()


def test_library_messages_name_the_option_not_the_python_parameter(model, tmp_path):
    """The library says "overwrite=True (--overwrite)"; the command says only --overwrite."""
    (tmp_path / "taken.gguf").write_bytes(b"mine")
    r = run("gguf", model / "unet", tmp_path / "taken.gguf")
    assert r.returncode == 1 and "pass --overwrite to replace it" in r.stderr and "overwrite=True" not in r.stderr
    assert (tmp_path / "taken.gguf").read_bytes() == b"mine"
    weights = tmp_path / "odd.safetensors"
    safetensors.numpy.save_file({"odd.weight": np.ones((64, 256), np.float32)}, str(weights))
    r = run("gguf", weights, tmp_path / "odd.gguf")
    assert r.returncode == 1 and "pass --arch if it is one of them" in r.stderr and "arch=" not in r.stderr
    r = run("gguf", model / "unet", tmp_path / "u.gguf", "--pure")
    assert r.returncode == 1 and "--pure" in r.stderr and "pure=" not in r.stderr
    import arrowquant.gguf as ag
    with pytest.raises(aq_errors.ParameterError, match=r"pass overwrite=True \(--overwrite\)"):
        ag.convert(model / "unet", tmp_path / "taken.gguf")


def test_ctrl_c_while_the_command_is_still_importing_is_one_line(tmp_path):
    """Round two: Ctrl-C in the command's first second gave a KeyboardInterrupt traceback from
    an import. Simulated exactly: the console script's import of pyarrow is interrupted."""
    script = ("import sys\nsys.argv = ['/venv/bin/arrowquant', '--help']\n"
              "class Interrupt:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'pyarrow':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Interrupt())\n"
              "from arrowquant.cli import main\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.stderr == "arrowquant: interrupted while starting; nothing was written\n"
    assert r.returncode in (-2, 130)  # ended by SIGINT, as Python ends on an unhandled Ctrl-C
    # A program that merely imports arrowquant keeps Python's own report.
    r = subprocess.run([sys.executable, "-c", script.replace("/venv/bin/arrowquant", "my_tool.py")],
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" in r.stderr and "KeyboardInterrupt" in r.stderr
