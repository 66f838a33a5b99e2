"""quantize / quantize_batch / quantize_batch_with_progress / dequantize on NumPy arrays."""

import ml_dtypes
import numpy as np
import pytest
from reference import decode, encode

import arrowquant as aq
from arrowquant import ColumnTypeError, DataError, ParameterError


def check_against_reference(qt, w32, bits, group_size, symmetric=False):
    packed, scales, zero_points = encode(w32, bits, group_size, symmetric)
    assert qt.quantized_data.tobytes() == packed
    assert np.array_equal(qt.scales, scales)
    assert np.array_equal(qt.zero_points, zero_points)
    decoded = decode(qt.quantized_data.tobytes(), qt.scales, qt.zero_points, qt.shape, bits, group_size)
    assert np.array_equal(qt.dequantize(), decoded)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("shape", [(96,), (10, 70), (8, 3, 3, 3)])
def test_quantize_matches_reference(bits, shape):
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    qt = aq.ArrowQuantV2(group_size=32).quantize(w, bit_width=bits)
    assert qt.shape == shape and qt.bit_width == bits and qt.group_size == 32 and qt.source_dtype == "F32"
    assert qt.nbytes == qt.quantized_data.nbytes + 8 * qt.scales.size
    check_against_reference(qt, w, bits, 32)


def test_results_are_numpy_arrays_that_own_the_kernel_buffers():
    qt = aq.ArrowQuantV2().quantize(np.ones((4, 256), np.float32))
    for a in (qt.quantized_data, qt.scales, qt.zero_points):
        assert isinstance(a, np.ndarray) and a.flags.c_contiguous
        assert a.base is not None  # a view on the capsule-owned buffer, not a numpy allocation


def test_float16_and_both_bfloat16_spellings():
    w = (np.random.default_rng(1).standard_normal((6, 100)) * 0.05).astype(np.float32)
    q = aq.ArrowQuantV2(group_size=32)
    h = w.astype(np.float16)
    qt = q.quantize(h)
    assert qt.source_dtype == "F16"
    check_against_reference(qt, h.astype(np.float32), 4, 32)
    b = w.astype(ml_dtypes.bfloat16)
    as_bf16 = q.quantize(b)
    as_bits = q.quantize(b.view(np.uint16), dtype="bfloat16")
    assert as_bf16.source_dtype == as_bits.source_dtype == "BF16"
    check_against_reference(as_bf16, b.astype(np.float32), 4, 32)
    assert as_bits.quantized_data.tobytes() == as_bf16.quantized_data.tobytes()
    assert as_bf16.dequantize(dtype=ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16
    assert as_bf16.dequantize(dtype="bfloat16").shape == (6, 100)


def test_non_contiguous_and_big_endian_arrays_give_correct_results():
    base = np.random.default_rng(2).standard_normal((40, 64)).astype(np.float32)
    q = aq.ArrowQuantV2(group_size=16)
    transposed = base.T
    check_against_reference(q.quantize(transposed), np.ascontiguousarray(transposed), 4, 16)
    strided = base[::3, ::2]
    check_against_reference(q.quantize(strided), np.ascontiguousarray(strided), 4, 16)
    big_endian = base.astype(">f4")
    check_against_reference(q.quantize(big_endian), base, 4, 16)


@pytest.mark.parametrize("bad", [np.zeros(4, np.float64), np.zeros(4, np.int32), np.zeros(4, np.uint16)])
def test_unsupported_dtypes_are_refused_with_the_dtype_named(bad):
    with pytest.raises(ParameterError, match=str(bad.dtype)):
        aq.ArrowQuantV2().quantize(bad)


def test_nan_in_array_names_layer_and_index():
    w = np.ones((3, 40), np.float32)
    w[2, 5] = np.nan
    with pytest.raises(DataError, match=r"layer 'second'.*index 85"):
        aq.ArrowQuantV2().quantize_batch({"first": np.ones(8, np.float32), "second": w})


def test_quantize_batch_keeps_input_order_and_matches_single_calls():
    rng = np.random.default_rng(3)
    layers = {f"z{i}" if i % 2 else f"a{i}": rng.standard_normal((i + 1, 50)).astype(np.float32) for i in range(12)}
    q = aq.ArrowQuantV2(group_size=64)
    out = q.quantize_batch(layers, bit_width=2)
    assert list(out) == list(layers)
    for name, w in layers.items():
        check_against_reference(out[name], w, 2, 64)


def test_quantize_batch_rejects_non_arrays_before_doing_work():
    with pytest.raises(ColumnTypeError, match="layer 'b': expected a numpy.ndarray; got list"):
        aq.ArrowQuantV2().quantize_batch({"a": np.ones(4, np.float32), "b": [1.0, 2.0]})


def test_progress_is_reported_in_order_on_the_calling_thread():
    import threading
    rng = np.random.default_rng(4)
    layers = {f"l{i}": rng.standard_normal(300_000 + i).astype(np.float32) for i in range(8)}
    calls = []
    main = threading.get_ident()
    out = aq.ArrowQuantV2().quantize_batch_with_progress(
        layers, bit_width=4, progress_callback=lambda name, f: calls.append((name, f, threading.get_ident())))
    assert [c[0] for c in calls] == list(layers)
    fractions = [c[1] for c in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] > 0
    assert all(c[2] == main for c in calls)
    assert list(out) == list(layers)


def test_exception_in_progress_callback_stops_and_propagates():
    rng = np.random.default_rng(5)
    layers = {f"l{i}": rng.standard_normal(2_000_000).astype(np.float32) for i in range(6)}
    seen = []

    def callback(name, fraction):
        seen.append(name)
        if name == "l2":
            raise KeyboardInterrupt("stop")

    result = None
    with pytest.raises(KeyboardInterrupt, match="stop"):
        result = aq.ArrowQuantV2().quantize_batch_with_progress(layers, progress_callback=callback)
    assert result is None
    assert seen == ["l0", "l1", "l2"]  # 2M weights per chunk: work stopped after the third layer


def test_module_level_dequantize_for_tensors_and_tables():
    w = np.random.default_rng(6).standard_normal((5, 64)).astype(np.float32)
    q = aq.ArrowQuantV2(group_size=32)
    qt = q.quantize(w)
    assert np.array_equal(aq.dequantize(qt), qt.dequantize())
    assert aq.dequantize(qt, np.float16).dtype == np.float16
    import pyarrow as pa
    table = pa.table({"layer_name": ["w"], "weights": pa.array([w.reshape(-1)], pa.list_(pa.float32())),
                      "shape": [[5, 64]]})
    back = aq.dequantize(q.quantize_arrow(table))
    assert np.array_equal(np.asarray(back.column("weights")[0].values).reshape(5, 64), qt.dequantize())


def test_dequantize_refuses_a_tensor_whose_lengths_lie():
    qt = aq.ArrowQuantV2(group_size=32).quantize(np.ones((4, 64), np.float32))
    qt.quantized_data = qt.quantized_data[:-1]
    with pytest.raises(DataError, match="'quantized_data' has 127 bytes but shape \\[4, 64\\] at 4 bits needs 128"):
        qt.dequantize()
    qt2 = aq.ArrowQuantV2(group_size=32).quantize(np.ones((4, 64), np.float32))
    qt2.scales = qt2.scales[:3]
    with pytest.raises(DataError, match="has 8 groups but 'scales' has 3"):
        qt2.dequantize()


def test_thread_count_does_not_change_numpy_results():
    w = np.random.default_rng(7).standard_normal((700, 999)).astype(np.float32)
    one = aq.ArrowQuantV2(num_threads=1).quantize(w, bit_width=2)
    two = aq.ArrowQuantV2(num_threads=2).quantize(w, bit_width=2)
    assert one.quantized_data.tobytes() == two.quantized_data.tobytes()
    assert np.array_equal(one.scales, two.scales)


def test_outputs_of_32_mb_and_more_are_correct_and_writable():
    """Outputs of 32 MB or more come from huge-page memory (module.cpp): the decoded array equals the
    numpy reference decoder's, is writable and owns its memory, and freeing it is clean."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((2048, 4608)).astype(np.float32)  # 36 MB decoded
    t = aq.ArrowQuantV2(group_size=128).quantize(w, 4)
    packed, scales, zero_points = encode(w, 4, 128, False)
    assert t.quantized_data.tobytes() == packed
    back = t.dequantize()
    assert back.nbytes >= 32 << 20 and back.flags.writeable
    assert np.array_equal(back, decode(packed, scales, zero_points, w.shape, 4, 128))
    back[:] = 0  # the memory is ours to write
    del back, t
