"""The user-facing quantizer over Arrow data."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from . import _core
from ._c_data import call_with_batches
from .errors import ColumnTypeError, ParameterError

MODES = ("diffusion", "base")
BIT_WIDTHS = (2, 4, 8)

# Columns of the quantize input table (the output schema is built by the core).
_INPUT_DOC = "a table with columns layer_name (string), weights (list<float32|float16>) and optional shape (list<int64>)"


def check_bit_width(bit_width: Any) -> int:
    if isinstance(bit_width, bool) or not isinstance(bit_width, int) or bit_width not in BIT_WIDTHS:
        raise ParameterError(f"bit_width must be 2, 4 or 8; got {bit_width!r}")
    return bit_width


def check_group_size(group_size: Any) -> int:
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or not 16 <= group_size <= 4096
        or group_size & (group_size - 1)
    ):
        raise ParameterError(
            f"group_size must be a power of two from 16 to 4096 (e.g. 32, 64, 128, 256); got {group_size!r}"
        )
    return group_size


def check_symmetric(symmetric: Any) -> bool:
    if not isinstance(symmetric, bool):
        raise ParameterError(f"symmetric must be True or False; got {symmetric!r}")
    return symmetric


def check_num_threads(num_threads: Any) -> int | None:
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ParameterError(f"num_threads must be a positive integer or None (all cores); got {num_threads!r}")
    return num_threads


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    return mode


def _as_batches(data: Any, what: str) -> tuple[list[pa.RecordBatch], pa.Schema]:
    """Record batches of a Table, RecordBatch or any Arrow PyCapsule producer, without copying."""
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        return [data], data.schema
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
    elif hasattr(data, "__arrow_c_array__"):
        batch = pa.record_batch(data)
        return [batch], batch.schema
    else:
        raise ColumnTypeError(f"{what} must be {_INPUT_DOC} (pyarrow Table/RecordBatch or an Arrow PyCapsule "
                              f"producer); got {type(data).__name__}")
    batches = table.to_batches()
    if not batches:
        # Keep the schema flowing through the core so an empty table is validated and gets the full output schema.
        batches = [pa.RecordBatch.from_pylist([], schema=table.schema)]
    return batches, table.schema


class ArrowQuantV2:
    """Group-wise quantizer of weight tensors held in Arrow tables (one row per layer).

    Args:
        mode: "diffusion" or "base" (which layers keep more precision in the model pipelines).
        group_size: elements per quantization group along each row (power of two, 16..4096).
        symmetric: symmetric (zero point fixed at 2^(b-1)) or asymmetric (min/max) groups.
        num_threads: worker threads; None uses every core.
    """

    def __init__(self, mode: str = "diffusion", group_size: int = 128, symmetric: bool = False,
                 num_threads: int | None = None) -> None:
        self.mode = check_mode(mode)
        self.group_size = check_group_size(group_size)
        self.symmetric = check_symmetric(symmetric)
        self.num_threads = check_num_threads(num_threads)

    def __repr__(self) -> str:
        return (f"ArrowQuantV2(mode={self.mode!r}, group_size={self.group_size}, "
                f"symmetric={self.symmetric}, num_threads={self.num_threads})")

    def _options(self, bit_width: Any, group_size: Any, symmetric: Any) -> tuple[int, int, bool, int]:
        return (
            check_bit_width(bit_width),
            self.group_size if group_size is None else check_group_size(group_size),
            self.symmetric if symmetric is None else check_symmetric(symmetric),
            self.num_threads or 0,
        )

    def quantize_arrow(self, table: Any, bit_width: int = 4, *, group_size: int | None = None,
                       symmetric: bool | None = None) -> pa.Table:
        """Quantize every layer of a table; returns a table of the quantized schema (docs/format.md)."""
        options = self._options(bit_width, group_size, symmetric)
        batches, _ = _as_batches(table, "table")
        return pa.Table.from_batches(call_with_batches(_core.quantize_batches, batches, *options))

    def quantize_arrow_batch(self, batch: Any, bit_width: int = 4, *, group_size: int | None = None,
                             symmetric: bool | None = None) -> pa.RecordBatch:
        """Quantize one record batch; returns one record batch."""
        options = self._options(bit_width, group_size, symmetric)
        if isinstance(batch, pa.Table) or (hasattr(batch, "__arrow_c_stream__") and not hasattr(batch, "__arrow_c_array__")):
            raise ColumnTypeError(f"quantize_arrow_batch takes one record batch; got {type(batch).__name__} "
                                  "(use quantize_arrow for tables and streams)")
        batches, _ = _as_batches(batch, "batch")
        return call_with_batches(_core.quantize_batches, batches, *options)[0]

    def dequantize_arrow(self, table: Any) -> pa.Table:
        """Decode a quantized table back to float32: columns layer_name, weights, shape."""
        batches, _ = _as_batches(table, "table")
        return pa.Table.from_batches(call_with_batches(_core.dequantize_batches, batches, self.num_threads or 0))
