"""Quantizing Arrow datasets on a Ray cluster (``pip install 'arrowquant[ray]'``): Ray Data's
``map_batches`` hands each task a pyarrow table, which ``quantize_arrow`` quantizes zero-copy on as
many threads as Ray gives the task CPUs. Runs on a laptop (``ray.init()``) and unchanged on a
cluster (``ray.init(address=...)`` or ``RAY_ADDRESS``). docs/distributed.md has the details."""

from __future__ import annotations

try:
    import ray  # noqa: F401
    import ray.data
except ImportError as error:  # pragma: no cover - exercised only without ray
    raise ImportError("arrowquant.ray needs Ray Data: pip install 'arrowquant[ray]'") from error

import pyarrow as pa

from .validation import check_bit_width, check_group_size, check_method, check_num_threads, check_symmetric


def _quantize_batch(batch: pa.Table, bit_width: int, group_size: int, method: str, symmetric: bool,
                    num_threads: int) -> pa.Table:
    from .quantizer import ArrowQuantV2
    quantizer = ArrowQuantV2(group_size=group_size, symmetric=symmetric, num_threads=num_threads, method=method)
    return quantizer.quantize_arrow(batch, bit_width)


def _dequantize_batch(batch: pa.Table, num_threads: int) -> pa.Table:
    from .quantizer import ArrowQuantV2
    return ArrowQuantV2(num_threads=num_threads).dequantize_arrow(batch)


def quantize_dataset(ds: "ray.data.Dataset", *, bit_width: int = 4, group_size: int = 128, method: str = "rtn",
                     symmetric: bool = False, num_cpus: int = 1, batch_size: int | None = None) -> "ray.data.Dataset":
    """A dataset of quantized rows (docs/format.md's output columns) from a dataset with
    ``quantize_arrow``'s input columns (layer_name, weights, optional shape), e.g. from
    ``ray.data.read_parquet``. Each task quantizes one batch with ``num_cpus`` threads, the CPUs
    Ray reserves for it (never every core of the node). Lazy, as Ray datasets are; the bytes equal
    ``quantize_arrow``'s for the same rows and settings."""
    options = {"bit_width": check_bit_width(bit_width), "group_size": check_group_size(group_size),
               "method": check_method(method), "symmetric": check_symmetric(symmetric),
               "num_threads": check_num_threads(num_cpus)}
    return ds.map_batches(_quantize_batch, fn_kwargs=options, batch_format="pyarrow", num_cpus=num_cpus,
                          batch_size=batch_size, zero_copy_batch=True)


def dequantize_dataset(ds: "ray.data.Dataset", *, num_cpus: int = 1, batch_size: int | None = None
                       ) -> "ray.data.Dataset":
    """The inverse: rows of layer_name, weights (float32) and shape."""
    return ds.map_batches(_dequantize_batch, fn_kwargs={"num_threads": check_num_threads(num_cpus)},
                          batch_format="pyarrow", num_cpus=num_cpus, batch_size=batch_size, zero_copy_batch=True)
