"""Coverage-guided fuzzing of the Arrow import path (atheris). Run: make fuzz TARGET=arrow.

The input bytes choose a table's layout (list kind, value type, lengths, offsets that may lie,
nulls, slices); quantize_arrow must return a correct result or raise an ArrowQuantError."""

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    import pyarrow as pa

    import arrowquant as aq

VALUE_TYPES = [pa.float32(), pa.float16(), pa.float64(), pa.int8(), pa.string()]


def build_table(fdp: atheris.FuzzedDataProvider) -> pa.Table:
    n = fdp.ConsumeIntInRange(0, 6)
    value_type = VALUE_TYPES[fdp.ConsumeIntInRange(0, len(VALUE_TYPES) - 1)]
    total = fdp.ConsumeIntInRange(0, 300)
    if pa.types.is_floating(value_type):
        values = pa.array(np.frombuffer(fdp.ConsumeBytes(total * 4).ljust(total * 4, b"\0"), np.float32)
                          .astype(value_type.to_pandas_dtype()), value_type)
    elif value_type == pa.string():
        values = pa.array([str(i) for i in range(total)], pa.string())  # typed: [] alone is null-typed
    else:
        values = pa.array(np.zeros(total, np.int8))
    offsets = [fdp.ConsumeIntInRange(-2, total + 2) for _ in range(n + 1)]
    try:
        weights = pa.Array.from_buffers(pa.list_(value_type), n, [None, pa.array(offsets, pa.int32()).buffers()[1]],
                                        children=[values])
    except pa.ArrowInvalid:
        weights = pa.ListArray.from_arrays(pa.array(np.linspace(0, total, n + 1).astype(np.int32)), values)
    if fdp.ConsumeBool() and n > 1:
        weights = weights.slice(1)
    names = pa.array([None if fdp.ConsumeProbability() < 0.05 else f"l{i}" for i in range(len(weights))], pa.string())
    return pa.table({"layer_name": names, "weights": weights})


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    try:
        table = build_table(fdp)
    except pa.ArrowInvalid:  # pyarrow itself refuses to build it: nothing reaches arrowquant
        return
    bits = [2, 4, 8][fdp.ConsumeIntInRange(0, 2)]
    try:
        out = aq.ArrowQuantV2(group_size=16).quantize_arrow(table, bits)
    except aq.ArrowQuantError:
        return
    back = aq.ArrowQuantV2().dequantize_arrow(out)
    assert back.num_rows == table.num_rows


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
