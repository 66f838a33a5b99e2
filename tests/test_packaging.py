"""What a user who installs the wheel gets: the package's name and licenses in its metadata, the
pyarrow range, a start that loads none of the heavy optional modules, and (under `make test`) the
installed wheel rather than the source tree."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import arrowquant as aq

ROOT = Path(__file__).parent.parent
HEAVY = ["ml_dtypes", "tqdm", "torch", "ray", "diffusers", "transformers", "safetensors"]
LOADED = "import sys, json; print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))".format(heavy=HEAVY)


def loaded_after(code: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code + "\n" + LOADED], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_module():
    assert loaded_after("import arrowquant") == []


def test_help_loads_no_heavy_module_and_names_the_tool():
    code = ("import contextlib, io, runpy, sys\nsys.argv = ['arrowquant', '--help']\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "    runpy.run_module('arrowquant', run_name='__main__')\nassert 'usage: arrowquant' in out.getvalue()")
    assert loaded_after(code) == []


def test_the_distribution_carries_its_name_version_licenses_and_command():
    dist = importlib.metadata.distribution("arrowquantize")
    assert dist.version == aq.__version__
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    files = {Path(str(f)).name for f in dist.files or []}
    assert {"LICENSE", "THIRD_PARTY_NOTICES.md"} <= files
    assert [e.value for e in dist.entry_points if e.name == "arrowquant"] == ["arrowquant.cli:main"]
    requires = dist.requires or []
    assert f"pyarrow<{aq.PYARROW_MAJOR + 1},>={aq.PYARROW_MAJOR}" in requires


def test_the_notices_carry_every_ported_license():
    notices = (ROOT / "THIRD_PARTY_NOTICES.md").read_text()
    assert "Copyright (c) 2023-2026 The ggml authors" in notices  # ggml-quants.c and llama.cpp ports
    assert "Wenzel Jakob" in notices  # nanobind, compiled into the extension
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


@pytest.mark.skipif(os.environ.get("ARROWQUANT_TEST_INSTALLED") != "1", reason="make test runs against the wheel")
def test_make_test_runs_against_the_installed_wheel():
    installed = Path(aq.__file__).resolve()
    assert ROOT / "src" not in installed.parents, installed
    assert "site-packages" in installed.parts
