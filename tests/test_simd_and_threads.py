"""Every SIMD path and every thread count produce the same bytes."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import SIMD_PATHS, heavy_tailed, make_table
from reference import decode_row

import arrowquant as aq


def mixed_layers(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv": heavy_tailed(rng, (32, 4, 3, 3)),
        "odd_rows": rng.standard_normal((9, 37)).astype(np.float32),   # rows start mid-byte
        "tail": rng.standard_normal(1001).astype(np.float32),
        "const": np.full((4, 64), 0.25, np.float32),
        "tiny": np.array([1e-30, -1e-30, 0.0], np.float32),
    }


def quantize_all(table, **kw):
    q = aq.ArrowQuantV2()
    results = {}
    for bits in (2, 4, 8):
        for group_size in (16, 32, 64, 128, 256):
            for symmetric in (False, True):
                out = q.quantize_arrow(table, bit_width=bits, group_size=group_size, symmetric=symmetric, **kw)
                results[bits, group_size, symmetric] = (out, q.dequantize_arrow(out))
    return results


def test_every_path_is_byte_identical_to_scalar():
    for float16 in (False, True):
        table = make_table(mixed_layers(), float16=float16)
        per_path = {}
        try:
            for path in SIMD_PATHS:
                aq.set_simd_path(path)
                assert aq.simd_info()["active"] == path
                per_path[path] = quantize_all(table)
        finally:
            aq.set_simd_path("auto")
        for path in SIMD_PATHS:
            for key, (out, back) in per_path[path].items():
                ref_out, ref_back = per_path["scalar"][key]
                assert out.equals(ref_out), (path, key, float16)
                assert back.equals(ref_back), (path, key, float16)


def test_simd_paths_exist_on_this_machine():
    # The build machine has AVX-512; if detection broke, the identity test above would test nothing.
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if " avx512bw" in flags:
        assert "avx512" in SIMD_PATHS
    if " avx2" in flags:
        assert "avx2" in SIMD_PATHS


def test_large_layer_decodes_correctly_on_every_path(simd_path):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((257, 1021)).astype(np.float32)  # 262k elements: split over several tasks
    out = aq.ArrowQuantV2(group_size=64).quantize_arrow(make_table({"w": w}), bit_width=2)
    back = aq.ArrowQuantV2().dequantize_arrow(out)
    assert np.array_equal(np.array(back.column("weights")[0].values).reshape(w.shape), decode_row(out, 0))


@pytest.mark.parametrize("shape", [(512, 1024), (1001, 333), (3, 200_003), (600_000,)])
@pytest.mark.parametrize("bits", [2, 4])
def test_output_is_identical_for_any_thread_count(shape, bits):
    rng = np.random.default_rng(3)
    table = make_table({"a": rng.standard_normal(shape).astype(np.float32),
                        "b": rng.standard_normal(5000).astype(np.float32)})
    one = aq.ArrowQuantV2(num_threads=1).quantize_arrow(table, bit_width=bits)
    for threads in (2, 3, 8, None):
        q = aq.ArrowQuantV2(num_threads=threads)
        out = q.quantize_arrow(table, bit_width=bits)
        assert out.equals(one), threads
        assert q.dequantize_arrow(out).equals(aq.ArrowQuantV2(num_threads=1).dequantize_arrow(one))


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_environment_variable_forces_the_path(path):
    r = run_python("import arrowquant as aq; i = aq.simd_info(); print(i['active'], i['forced'])", ARROWQUANT_ISA=path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].split() == [path, "True"]


def test_environment_variable_with_unknown_value_fails_clearly():
    r = run_python("import arrowquant", ARROWQUANT_ISA="sse9")
    assert r.returncode != 0
    assert "ARROWQUANT_ISA: unknown SIMD path 'sse9'; expected one of: auto, scalar, avx2, avx512" in r.stderr


def test_unknown_path_in_set_simd_path():
    with pytest.raises(aq.ParameterError, match="unknown SIMD path 'neon9'"):
        aq.set_simd_path("neon9")


def test_concurrent_python_threads_get_the_same_bytes_as_a_sequential_run():
    rng = np.random.default_rng(4)
    tables = [make_table({"w": rng.standard_normal((300, 700)).astype(np.float32)}) for _ in range(4)]
    q = aq.ArrowQuantV2()
    expected = [q.quantize_arrow(t, bit_width=4) for t in tables]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = q.quantize_arrow(tables[i % 4], bit_width=4)
                q.dequantize_arrow(results[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        assert results[i].equals(expected[i % 4])


def test_error_statistics_are_identical_on_every_path_and_thread_count():
    from arrowquant.tensor import quantize_arrays
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal((300, 777)).astype(np.float32), (rng.standard_normal(5000) * 1e18).astype(np.float32)]
    seen = set()
    try:
        for path in SIMD_PATHS:
            aq.set_simd_path(path)
            for threads in (1, 2):
                out = quantize_arrays(arrays, ["F32", "F32"], ["a", "b"], bit_width=4, group_size=64, symmetric=False,
                                      num_threads=threads, with_stats=True)
                seen.add(tuple((s.sum_xx, s.sum_yy, s.sum_xy, s.sum_dd, s.max_abs_error, s.count) for _, s, _ in out))
    finally:
        aq.set_simd_path("auto")
    assert len(seen) == 1
    (a, b), = seen
    assert a[5] == 300 * 777 and np.isfinite(b[0])  # the 1e18-scale layer took the float64 route
