"""Moving record batches to and from the C++ core through the Arrow C Data Interface.

pyarrow exports each batch into an ``ArrowArray`` / ``ArrowSchema`` pair allocated with
``pyarrow.cffi``; the core imports them (taking ownership: it releases them even when it fails),
writes its results into pairs we allocate, and we import those. No buffer is copied.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pyarrow as pa
from pyarrow.cffi import ffi


def _new_pair():
    array = ffi.new("struct ArrowArray*")
    schema = ffi.new("struct ArrowSchema*")
    return array, schema, (int(ffi.cast("uintptr_t", array)), int(ffi.cast("uintptr_t", schema)))


def _release_all(pairs) -> None:
    for array, schema, _ in pairs:
        if array.release != ffi.NULL:
            array.release(array)
        if schema.release != ffi.NULL:
            schema.release(schema)


def call_with_batches(
    core_function: Callable[..., Any], batches: Sequence[pa.RecordBatch], *args
) -> tuple[list[pa.RecordBatch], Any]:
    """Run ``core_function(input_addresses, output_addresses, *args)``; returns its batches and
    whatever the function itself returned."""
    inputs = [_new_pair() for _ in batches]
    outputs = [_new_pair() for _ in batches]
    try:
        for batch, (_, _, addresses) in zip(batches, inputs):
            batch._export_to_c(*addresses)
    except BaseException:
        _release_all(inputs)
        raise
    returned = core_function([p[2] for p in inputs], [p[2] for p in outputs], *args)
    return [pa.RecordBatch._import_from_c(*addresses) for _, _, addresses in outputs], returned
