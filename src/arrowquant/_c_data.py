"""Moving record batches to and from the C++ core through the Arrow C Data Interface.

pyarrow exports each batch into an ``ArrowArray`` / ``ArrowSchema`` pair allocated with
``pyarrow.cffi``; the core imports them (taking ownership: it releases them even when it fails),
writes its results into pairs we allocate, and we import those. No buffer is copied.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
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


# ----------------------------------------------------------------------------------------------
# View layouts (string_view, binary_view, list_view, large_list_view): polars exports strings as
# string_view, and other producers may use list views. The core reads the classic layouts, so
# such columns are converted here; every other column passes through untouched (zero-copy).

def _plain_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list_view(t) or pa.types.is_list(t):
        return pa.list_(_plain_type(t.value_type))
    if pa.types.is_large_list_view(t) or pa.types.is_large_list(t):
        return pa.large_list(_plain_type(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_plain_type(t.value_type), t.list_size)
    return t


def _plain_array(array: pa.Array) -> pa.Array:
    t = array.type
    if _plain_type(t) == t:
        return array
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return array.cast(_plain_type(t))
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return _list_from_view(array)
    # a classic list whose values hold a view type
    values = _plain_array(array.values)
    cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
    return cls.from_arrays(array.offsets, values, mask=array.is_null() if array.null_count else None)


def _list_from_view(array: pa.Array) -> pa.Array:
    """A list_view as a list: its values reused when the views are in order and contiguous (what
    producers write in practice), gathered otherwise."""
    large = pa.types.is_large_list_view(array.type)
    index_type = np.int64 if large else np.int32
    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    sizes = array.sizes.to_numpy(zero_copy_only=False).astype(np.int64)
    valid = ~array.is_null().to_numpy(zero_copy_only=False) if array.null_count else np.ones(len(array), bool)
    sizes = np.where(valid, sizes, 0)
    ends = np.concatenate([[0], np.cumsum(sizes)])
    values = _plain_array(array.values)
    start = int(offsets[valid][0]) if valid.any() else 0
    if np.array_equal(np.where(valid, offsets, start + ends[:-1]), start + ends[:-1]):
        values = values.slice(start, int(ends[-1]))
    else:
        take = np.concatenate([np.arange(o, o + n) for o, n in zip(offsets[valid], sizes[valid])] or [np.zeros(0, np.int64)])
        values = values.take(pa.array(take))
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(pa.array(ends.astype(index_type)), values,
                           mask=pa.array(~valid) if array.null_count else None)


def without_views(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with view-layout columns converted to the classic layouts (the others untouched)."""
    if all(_plain_type(f.type) == f.type for f in batch.schema):
        return batch
    columns = [_plain_array(c) for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(
        [pa.field(f.name, c.type, f.nullable, f.metadata) for f, c in zip(batch.schema, columns)],
        metadata=batch.schema.metadata))
