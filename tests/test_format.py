"""Quantized output decoded with the independent numpy decoder: bounds, codes, exact encoding."""

import numpy as np
import pyarrow as pa
import pytest
from conftest import heavy_tailed, make_table
from reference import decode, decode_row, encode, geometry, unpack_codes

import arrowquant as aq

BITS = [2, 4, 8]
GROUP_SIZES = [32, 64, 128, 256]
# 1-D, 2-D with rows that do not divide into groups, 4-D convolution, odd row lengths (codes of
# a row then start mid-byte), a single element.
SHAPES = [(1000,), (7, 300), (16, 3, 3, 3), (5, 33), (3, 17), (1,), (2, 1)]


def groups_of(x, shape, group_size):
    rows, cols = geometry(shape)
    m = x.reshape(rows, cols)
    for r in range(rows):
        for c0 in range(0, cols, group_size):
            yield m[r, c0:c0 + group_size]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_asymmetric_decodes_within_half_a_step(bits, group_size, shape):
    rng = np.random.default_rng(bits * 1000 + group_size)
    w = heavy_tailed(rng, shape)
    out = aq.ArrowQuantV2(group_size=group_size).quantize_arrow(make_table({"w": w}), bit_width=bits)
    assert out.column("shape")[0].as_py() == list(shape)
    decoded = decode_row(out, 0)
    scales = np.array(out.column("scales")[0].as_py(), np.float32)
    rows, cols = geometry(shape)
    step = np.repeat(scales.reshape(rows, -1), group_size, axis=1)[:, :cols].reshape(shape)
    tolerance = np.abs(step) / 2 * (1 + 1e-5) + 4e-7 * np.abs(w).max()
    assert np.all(np.abs(decoded - w) <= tolerance)


@pytest.mark.parametrize("bits", BITS)
def test_asymmetric_groups_use_both_extreme_codes(bits):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 512)).astype(np.float32)
    out = aq.ArrowQuantV2(group_size=64).quantize_arrow(make_table({"w": w}), bit_width=bits)
    codes = unpack_codes(out.column("quantized_data")[0].as_py(), w.size, bits).reshape(8, 8, 64)
    assert np.all(codes.min(axis=2) == 0)
    assert np.all(codes.max(axis=2) == (1 << bits) - 1)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", SHAPES)
def test_symmetric_decodes_within_one_step_and_keeps_the_extreme(bits, shape):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(shape).astype(np.float32)
    out = aq.ArrowQuantV2(group_size=32, symmetric=True).quantize_arrow(make_table({"w": w}), bit_width=bits)
    assert out.column("symmetric")[0].as_py() is True
    zero_points = np.array(out.column("zero_points")[0].as_py())
    assert np.all(zero_points == 2 ** (bits - 1))
    decoded = decode_row(out, 0)
    scales = np.array(out.column("scales")[0].as_py(), np.float32)
    for group, dec, scale in zip(groups_of(w, shape, 32), groups_of(decoded, shape, 32), scales):
        assert np.all(np.abs(dec - group) <= abs(scale) * (1 + 1e-6))
        k = np.argmax(np.abs(group))
        assert dec[k] == group[k]


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_constant_groups_decode_exactly(bits, symmetric):
    w = np.concatenate([np.zeros(64), np.full(64, 0.375), np.full(64, -3.5), np.full(64, 1e-3)]).astype(np.float32)
    out = aq.ArrowQuantV2(group_size=64, symmetric=symmetric).quantize_arrow(make_table({"c": w}), bit_width=bits)
    assert np.array_equal(decode_row(out, 0), w)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", SHAPES)
def test_output_matches_numpy_reference_encoder_byte_for_byte(bits, symmetric, shape):
    rng = np.random.default_rng(3)
    w = heavy_tailed(rng, shape)
    special = np.array([0.0, -0.0, 0.5], np.float32)  # signed zeros and an exact value
    w.reshape(-1)[:3] = special[: min(3, w.size)]
    out = aq.ArrowQuantV2(group_size=32, symmetric=symmetric).quantize_arrow(make_table({"w": w}), bit_width=bits)
    packed, scales, zero_points = encode(w, bits, 32, symmetric)
    assert out.column("quantized_data")[0].as_py() == packed
    assert np.array_equal(np.array(out.column("scales")[0].as_py(), np.float32), scales)
    assert np.array_equal(np.array(out.column("zero_points")[0].as_py(), np.float32), zero_points)


@pytest.mark.parametrize("bits", BITS)
def test_dequantize_matches_numpy_decoder_exactly(bits):
    rng = np.random.default_rng(4)
    layers = {"a": rng.standard_normal((33, 65)).astype(np.float32), "b": rng.standard_normal(999).astype(np.float32)}
    q = aq.ArrowQuantV2(group_size=64)
    out = q.quantize_arrow(make_table(layers), bit_width=bits)
    back = q.dequantize_arrow(out)
    assert back.column_names == ["layer_name", "weights", "shape"]
    assert back.schema.field("weights").type == pa.list_(pa.float32())
    for i, name in enumerate(layers):
        assert back.column("layer_name")[i].as_py() == name
        assert back.column("shape")[i].as_py() == list(layers[name].shape)
        ours = np.array(back.column("weights")[i].values, np.float32)
        assert np.array_equal(ours, decode_row(out, i).reshape(-1))


def test_float16_input_quantizes_its_exact_values():
    rng = np.random.default_rng(5)
    w16 = (rng.standard_normal((4, 96)) * 0.1).astype(np.float16)
    w16.reshape(-1)[:2] = [np.float16(6e-8), np.float16(-6.1e-5)]  # subnormal halves
    out = aq.ArrowQuantV2(group_size=32).quantize_arrow(make_table({"h": w16}, float16=True), bit_width=4)
    packed, scales, zero_points = encode(w16.astype(np.float32), 4, 32, False)
    assert out.column("quantized_data")[0].as_py() == packed
    assert np.array_equal(np.array(out.column("scales")[0].as_py(), np.float32), scales)


def test_packed_length_and_bit_order_follow_the_format():
    # 5 codes at 2 bits: byte 0 holds elements 0..3 from the least significant bits, byte 1 element 4.
    w = np.array([0.0, 1.0, 2.0, 3.0, 3.0], np.float32)
    out = aq.ArrowQuantV2(group_size=16).quantize_arrow(make_table({"x": w}), bit_width=2)
    assert out.column("quantized_data")[0].as_py() == bytes([0b11100100, 0b00000011])
    assert out.column("scales")[0].as_py() == [1.0]
    assert out.column("zero_points")[0].as_py() == [0.0]


def test_huge_values_still_decode_within_half_a_step():
    w = np.array([-3.0e38, 3.0e38, 1.0e38, -1.0e38, 0.0, 2.9e38] * 6, np.float32)
    out = aq.ArrowQuantV2(group_size=16).quantize_arrow(make_table({"big": w}), bit_width=4)
    decoded = decode_row(out, 0).astype(np.float64)
    scale = np.float64(out.column("scales")[0].as_py()[0])
    assert np.all(np.abs(decoded[:16] - w[:16].astype(np.float64)) <= scale / 2 * (1 + 1e-5))


def test_zero_length_layer_gives_empty_data_and_no_scales():
    t = pa.table({"layer_name": ["empty", "zero_rows"], "weights": pa.array([[], []], pa.list_(pa.float32())),
                  "shape": [[0], [0, 8]]})
    out = aq.ArrowQuantV2().quantize_arrow(t)
    assert out.column("quantized_data").to_pylist() == [b"", b""]
    assert out.column("scales").to_pylist() == [[], []]
    back = aq.ArrowQuantV2().dequantize_arrow(out)
    assert back.column("weights").to_pylist() == [[], []]
    assert back.column("shape").to_pylist() == [[0], [0, 8]]


def test_reference_decoder_catches_a_wrong_length():
    # Guards the guard: the reference decoder itself rejects a truncated buffer.
    with pytest.raises(AssertionError):
        decode(b"\x00", [1.0], [0.0], [16], 4, 16)


def test_the_documented_subnormal_exception():
    """docs/format.md: the error bounds assume a normal float32 scale; its example is exact."""
    x = np.zeros((1, 64), np.float32)
    x[0, 1] = 5e-43
    t = aq.ArrowQuantV2().quantize(x, 8, group_size=64)
    assert t.scales[0] == np.float32(2.0**-149) and t.zero_points[0] == 0
    assert aq.dequantize(t)[0, 1] == np.float32(3.57e-43)
