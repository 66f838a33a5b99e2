"""A file's bytes do not depend on the machine that wrote it: every kernel's output on fixed
inputs (tests/cpp/kernels_digest.cpp) is the same on every SIMD path of this build, and the same
again from the scalar-only build for 64-bit Arm (cross-compiled with Debian's
g++-aarch64-linux-gnu and run under qemu-user)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
REQUIRED = os.environ.get("ARROWQUANT_REQUIRE_REFEREES") == "1"


def cmake() -> str:
    found = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    if found is None:
        pytest.fail("cmake is needed to build tests/cpp/kernels_digest") if REQUIRED else pytest.skip("no cmake")
    return found


def tool(*command: str) -> str:
    """Runs a build tool or the digest program and returns its output. Under `make sanitize` the
    sanitizer runtime is preloaded into every process; the compiler's own leaks would fail the build,
    so the tools run without it (the kernels are checked under ASan by the rest of the suite)."""
    env = {key: value for key, value in os.environ.items()
           if key != "LD_PRELOAD" and not key.endswith("SAN_OPTIONS")}
    done = subprocess.run(list(command), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def build_digest(build_dir: Path, *extra: str) -> Path:
    generator = ["-G", "Ninja"] if shutil.which("ninja", path=str(Path(sys.executable).parent)) or shutil.which("ninja") \
        else []
    tool(cmake(), "-S", str(ROOT), "-B", str(build_dir), *generator, "-DARROWQUANT_BUILD_PYTHON=OFF",
         "-DARROWQUANT_BUILD_DIGEST=ON", "-DCMAKE_BUILD_TYPE=Release", *extra)
    tool(cmake(), "--build", str(build_dir), "--target", "kernels_digest", "-j2")
    return build_dir / "kernels_digest"


def digests(lines: str) -> dict[str, dict[str, str]]:
    by_kernel: dict[str, dict[str, str]] = {}
    for line in lines.splitlines():
        path, kernel, digest = line.split()
        by_kernel.setdefault(kernel, {})[path] = digest
    return by_kernel


@pytest.fixture(scope="module")
def native():
    program = build_digest(ROOT / "build" / "digest")
    return digests(tool(str(program)))


def test_every_simd_path_writes_the_scalar_paths_bytes(native):
    import arrowquant as aq
    assert len(native) >= 300  # affine x 3 inputs x bits x groups, rotation, every GGUF type's encoders and decoder
    paths = set(aq.simd_info()["supported"])
    for kernel, by_path in native.items():
        assert set(by_path) == paths, kernel
        assert len(set(by_path.values())) == 1, f"{kernel}: {by_path}"


def test_the_aarch64_scalar_build_writes_the_same_bytes(native):
    missing = [tool for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(tool) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (Debian: g++-aarch64-linux-gnu qemu-user)"
        pytest.fail(message) if REQUIRED else pytest.skip(message)
    program = build_digest(ROOT / "build" / "digest-aarch64",
                           f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'tests' / 'cpp' / 'aarch64-linux-gnu.cmake'}")
    arm = digests(tool("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(program)))
    assert {path for by_path in arm.values() for path in by_path} == {"scalar"}  # the only path that build has
    assert arm.keys() == native.keys()
    for kernel, by_path in arm.items():
        assert by_path["scalar"] == native[kernel]["scalar"], kernel
