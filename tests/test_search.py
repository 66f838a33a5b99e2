"""method="search": same format, lower error, never worse than RTN for any group."""

import numpy as np
import pytest
from conftest import SIMD_PATHS, heavy_tailed, make_table
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference import decode, geometry

import arrowquant as aq


def group_errors(w, qt):
    """Per-group squared error in float64, from the independent decoder."""
    decoded = decode(qt.quantized_data.tobytes(), qt.scales, qt.zero_points, qt.shape, qt.bit_width, qt.group_size)
    rows, cols = geometry(w.shape)
    d = (w.astype(np.float64) - decoded.astype(np.float64)).reshape(rows, cols) ** 2
    g = qt.group_size
    return np.array([d[r, c:c + g].sum() for r in range(rows) for c in range(0, cols, g)])


finite_floats = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(values=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 300)), elements=finite_floats),
       bits=st.sampled_from([2, 4, 8]), group_size=st.sampled_from([16, 32, 64, 128]), symmetric=st.booleans())
def test_search_is_never_worse_than_rtn_for_any_group(values, bits, group_size, symmetric):
    q = aq.ArrowQuantV2(group_size=group_size, symmetric=symmetric)
    rtn = q.quantize(values, bits, method="rtn")
    search = q.quantize(values, bits, method="search")
    rtn_err, search_err = group_errors(values, rtn), group_errors(values, search)
    assert np.all(search_err <= rtn_err * (1 + 1e-9) + 1e-30)


@pytest.mark.parametrize("bits,min_gain", [(2, 0.25), (4, 0.06), (8, 0.04)])
@pytest.mark.parametrize("dist", ["normal", "t4"])
def test_search_lowers_the_error_markedly(bits, min_gain, dist):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((64, 1024)) * 0.02 if dist == "normal" else heavy_tailed(rng, (64, 1024))).astype(np.float32)
    q = aq.ArrowQuantV2(group_size=128)
    rtn = np.sqrt(group_errors(w, q.quantize(w, bits, method="rtn")).sum())
    search = np.sqrt(group_errors(w, q.quantize(w, bits, method="search")).sum())
    assert search < rtn * (1 - min_gain)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_search_codes_are_the_nearest_for_the_stored_parameters(bits, symmetric):
    from reference import unpack_codes
    rng = np.random.default_rng(3)
    w = heavy_tailed(rng, (16, 200))
    qt = aq.ArrowQuantV2(group_size=64, symmetric=symmetric).quantize(w, bits, method="search")
    rows, cols = geometry(w.shape)
    codes = unpack_codes(qt.quantized_data.tobytes(), w.size, bits).reshape(rows, cols).astype(np.float64)
    g = np.arange(rows)[:, None] * -(-cols // 64) + np.arange(cols)[None, :] // 64
    scale, zero_point = qt.scales[g].astype(np.float64), qt.zero_points[g].astype(np.float64)
    distance = np.abs((codes - zero_point) * scale - w)
    for step in (-1, 1):
        other = codes + step
        valid = (other >= 0) & (other <= 2 ** bits - 1)
        other_distance = np.abs((other - zero_point) * scale - w)
        assert not np.any(valid & (other_distance < distance - 1e-4 * np.abs(scale)))


@pytest.mark.parametrize("symmetric", [False, True])
def test_constant_tiny_and_tail_groups(symmetric):
    # Groups of 64: all zeros, a constant, a ramp, and a one-element tail group.
    w = np.concatenate([np.zeros(64), np.full(64, 0.3), np.linspace(-1, 1, 64), [5.0]]).astype(np.float32)
    qt = aq.ArrowQuantV2(group_size=64, symmetric=symmetric).quantize(w, 4, method="search")
    decoded = qt.dequantize()
    assert np.array_equal(decoded[:128], w[:128])  # constant groups stay exact
    assert decoded[192] == np.float32(5.0)
    rtn = aq.ArrowQuantV2(group_size=64, symmetric=symmetric).quantize(w, 4, method="rtn")
    assert np.all(group_errors(w, qt) <= group_errors(w, rtn) * (1 + 1e-9))


def test_every_path_and_thread_count_gives_the_same_search_bytes():
    rng = np.random.default_rng(5)
    layers = {"conv": heavy_tailed(rng, (64, 3, 3, 3)), "odd": rng.standard_normal((33, 129)).astype(np.float32),
              "big": rng.standard_normal((400, 700)).astype(np.float32)}
    table = make_table(layers)
    results = []
    try:
        for path in SIMD_PATHS:
            aq.set_simd_path(path)
            for threads in (1, 2):
                q = aq.ArrowQuantV2(num_threads=threads, method="search")
                results.append([q.quantize_arrow(table, bits, group_size=g, symmetric=s)
                                for bits in (2, 4, 8) for g in (32, 128) for s in (False, True)])
    finally:
        aq.set_simd_path("auto")
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.equals(b)


def test_method_defaults_and_validation(tmp_path):
    w = np.random.default_rng(6).standard_normal((8, 256)).astype(np.float32)
    q = aq.ArrowQuantV2()
    assert q.quantize(w).quantized_data.tobytes() == q.quantize(w, method="rtn").quantized_data.tobytes()
    assert aq.ArrowQuantV2(method="search").quantize(w).quantized_data.tobytes() == \
        q.quantize(w, method="search").quantized_data.tobytes()
    with pytest.raises(aq.ParameterError, match="method must be one of 'rtn', 'search'; got 'gptq'"):
        aq.ArrowQuantV2(method="gptq")
    with pytest.raises(aq.ParameterError, match="method"):
        q.quantize_arrow(make_table({"w": w}), method="best")
    from safetensors.numpy import save_file
    save_file({"w": w}, str(tmp_path / "m.safetensors"))
    report = q.quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq")
    assert report["settings"]["method"] == "search"  # pipelines default to search
    assert aq.open(tmp_path / "m.aq").metadata["settings"]["method"] == "search"
    t = aq.open(tmp_path / "m.aq").tensor("w")
    assert t.quantized_data.tobytes() == q.quantize(w, method="search").quantized_data.tobytes()
