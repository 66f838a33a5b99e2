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

import numpy as np
import pyarrow as pa

from .schemes import check_bits_for_scheme, check_rotate, check_scheme
from .validation import check_group_size, check_method, check_num_threads, check_symmetric


def _quantize_batch(batch: pa.Table, bit_width: int, group_size: int, method: str, symmetric: bool,
                    num_threads: int, scheme: str = "affine", rotate: bool = True) -> pa.Table:
    from .quantizer import ArrowQuantV2
    quantizer = ArrowQuantV2(group_size=group_size, symmetric=symmetric, num_threads=num_threads, method=method,
                             scheme=scheme, rotate=rotate)
    return quantizer.quantize_arrow(batch, bit_width)


def _dequantize_batch(batch: pa.Table, num_threads: int) -> pa.Table:
    from .quantizer import ArrowQuantV2
    return ArrowQuantV2(num_threads=num_threads).dequantize_arrow(batch)


def quantize_dataset(ds: "ray.data.Dataset", *, bit_width: int = 4, group_size: int = 128, method: str = "rtn",
                     symmetric: bool = False, num_cpus: int = 1, batch_size: int | None = None,
                     scheme: str = "affine", rotate: bool = True) -> "ray.data.Dataset":
    """A dataset of quantized rows (docs/format.md's output columns) from a dataset with
    ``quantize_arrow``'s input columns (layer_name, weights, optional shape), e.g. from
    ``ray.data.read_parquet``. Each task quantizes one batch with ``num_cpus`` threads, the CPUs
    Ray reserves for it (never every core of the node). Lazy, as Ray datasets are; the bytes equal
    ``quantize_arrow``'s for the same rows and settings."""
    scheme = check_scheme(scheme)
    options = {"bit_width": check_bits_for_scheme(bit_width, scheme), "group_size": check_group_size(group_size),
               "method": check_method(method), "symmetric": check_symmetric(symmetric),
               "num_threads": check_num_threads(num_cpus), "scheme": scheme, "rotate": check_rotate(rotate)}
    return ds.map_batches(_quantize_batch, fn_kwargs=options, batch_format="pyarrow", num_cpus=num_cpus,
                          batch_size=batch_size, zero_copy_batch=True)


def dequantize_dataset(ds: "ray.data.Dataset", *, num_cpus: int = 1, batch_size: int | None = None
                       ) -> "ray.data.Dataset":
    """The inverse: rows of layer_name, weights (float32) and shape."""
    return ds.map_batches(_dequantize_batch, fn_kwargs={"num_threads": check_num_threads(num_cpus)},
                          batch_format="pyarrow", num_cpus=num_cpus, batch_size=batch_size, zero_copy_batch=True)


# ------------------------------------------------------------------------------------------------
# Checkpoints: tensors quantized by Ray tasks, the file assembled by the driver.

# Test-only fault injection: when set (to a marker path), the first task that finds no marker
# creates it and kills its own worker process, so the tests can check that Ray's retry still gives
# a complete, byte-identical output.
FAULT_INJECTION_ENV = "_ARROWQUANT_KILL_FIRST_WORKER"


# Consecutive tensors of one file go to one task until it holds this many source bytes (or this
# many tensors): each task maps the file and parses its header once, which costs as much as
# quantizing a small tensor.
TASK_BYTES = 64 << 20
TASK_TENSORS = 64


def _fault_injection() -> None:
    import os
    from pathlib import Path
    marker = os.environ.get(FAULT_INJECTION_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).write_text("killed once")
        os._exit(1)


def _quantize_tensors(path: str, tensors: list, bits_and_settings: list, num_threads: int) -> list:
    """One task: several tensors of one file, each (name, kernel dtype, FP8 scale) with its (bits,
    group_size, symmetric, method, markov_threshold, scheme, rotate)."""
    from pathlib import Path

    from .checkpoint import source_array
    from .safetensors_io import SafetensorsFile
    from .tensor import quantize_arrays
    _fault_injection()
    results = []
    with SafetensorsFile(path) as sf:  # memory-mapped from storage every node sees
        for (name, dtype, fp8_scale), (bits, group_size, symmetric, method, markov_threshold, scheme, rotate) in zip(
                tensors, bits_and_settings):
            [(tensor, stats, markov)] = quantize_arrays(
                [source_array(sf, name, fp8_scale)], [dtype], [f"{Path(path).name}: layer {name!r}"], bit_width=bits, group_size=group_size,
                symmetric=symmetric, method=method, num_threads=num_threads, with_stats=True,
                markov_threshold=markov_threshold, scheme=scheme, rotate=rotate)
            stats_values = (stats.sum_xx, stats.sum_yy, stats.sum_xy, stats.sum_dd, stats.max_abs_error, stats.count)
            results.append(((tensor.quantized_data, tensor.scales, tensor.zero_points, tuple(tensor.shape),
                             tensor.bit_width, tensor.group_size, tensor.symmetric, tensor.source_dtype, tensor.scheme,
                             tensor.rotation), stats_values, markov))
            sf.release(name)
    return results


def _task_batches(jobs, path_of, bytes_of):
    """Consecutive jobs of one file, in order, up to TASK_BYTES / TASK_TENSORS per batch."""
    batch, size = [], 0
    for job in jobs:
        if batch and (path_of(job) != path_of(batch[0]) or size + bytes_of(job) > TASK_BYTES
                      or len(batch) >= TASK_TENSORS):
            yield batch
            batch, size = [], 0
        batch.append(job)
        size += bytes_of(job)
    if batch:
        yield batch


def _ordered_tasks(function, num_cpus: int, max_in_flight: int | None):
    """A map over Ray tasks: ``run(argument_tuples)`` yields each task's result in submission
    order, with at most ``max_in_flight`` submitted and not yet taken (default: twice the
    cluster's CPUs / num_cpus), so the driver holds a bounded number of results. Failed tasks
    are retried by Ray (a dead worker included)."""
    import collections
    import os

    options: dict = {"num_cpus": num_cpus, "max_retries": 3}
    if os.environ.get(FAULT_INJECTION_ENV):
        options["runtime_env"] = {"env_vars": {FAULT_INJECTION_ENV: os.environ[FAULT_INJECTION_ENV]}}
    task = ray.remote(function).options(**options)

    def run(arguments):
        window = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)) // num_cpus)
        pending = collections.deque()
        upcoming = iter(arguments)

        def submit() -> None:
            args = next(upcoming, None)
            if args is not None:
                pending.append(task.remote(*args))

        for _ in range(window):
            submit()
        while pending:
            result = ray.get(pending.popleft())
            submit()
            yield result

    return run


def ray_executor(num_cpus: int = 1, max_in_flight: int | None = None):
    """An executor for quantize_checkpoint: consecutive tensors of a file, up to TASK_BYTES, in
    one Ray task on ``num_cpus`` CPUs; results taken in checkpoint order (see _ordered_tasks)."""
    from .tensor import ErrorStats, QuantizedTensor
    tasks = _ordered_tasks(_quantize_tensors, num_cpus, max_in_flight)

    def run(jobs):
        batches = _task_batches(jobs, lambda job: job.file.path, lambda job: job.info.nbytes)
        arguments = ((str(batch[0].file.path), [(job.name, job.dtype, job.fp8_scale) for job in batch],
                      [(job.bits, job.group_size, job.symmetric, job.method, job.markov_threshold, job.scheme, job.rotate)
                       for job in batch], num_cpus) for batch in batches)
        for results in tasks(arguments):
            for fields, stats, markov in results:
                yield QuantizedTensor(*fields), ErrorStats(*stats), markov

    return run


def _encode_gguf_tensors(path: str, jobs: list, num_threads: int) -> list:
    """One task: several tensors of one file, each (name, type name, method, with_stats, rope heads)."""
    from .gguf.convert import encode_tensor
    from .gguf.types import gguf_type
    from .safetensors_io import SafetensorsFile
    _fault_injection()
    results = []
    with SafetensorsFile(path) as sf:  # memory-mapped from storage every node sees
        for name, type_name, method, with_stats, rope_heads, fp8_scale, importance in jobs:
            encoded, stats = encode_tensor(sf, sf.tensors[name], gguf_type(type_name), num_threads, with_stats, method,
                                           rope_heads, fp8_scale, importance)
            results.append((np.array(encoded), stats))  # its own copy: the mapping closes with the file
            sf.release(name)
    return results


def gguf_executor(num_cpus: int = 1, max_in_flight: int | None = None):
    """An executor for arrowquant.gguf.convert: each tensor's GGUF bytes encoded by a Ray task,
    taken in the file's order (consecutive tensors of a file, up to TASK_BYTES, share a task).
    ``run(jobs)`` takes (safetensors path, tensor name, GgufType, method, with_stats, rope heads or
    None, source bytes, FP8 scale or None, importance weights or None) tuples and yields (bytes, stats)."""
    tasks = _ordered_tasks(_encode_gguf_tensors, num_cpus, max_in_flight)

    def run(jobs):
        batches = _task_batches(jobs, lambda job: job[0], lambda job: job[6])
        arguments = ((str(batch[0][0]), [(name, gguf.name, method, with_stats, heads, scale, importance)
                                         for _, name, gguf, method, with_stats, heads, _, scale, importance in batch],
                      num_cpus)
                     for batch in batches)
        for results in tasks(arguments):
            yield from results

    return run


def quantize_checkpoint(src, out, *, bit_width: int = 4, group_size: int = 128, method: str = "search",
                        symmetric: bool = False, include=None, exclude=None, num_cpus: int = 1,
                        max_in_flight: int | None = None, overwrite: bool = False, variant: str | None = None,
                        progress_callback=None, scheme: str = "affine", rotate: bool = True) -> dict:
    """quantize_from_safetensors with every tensor quantized by a Ray task: the tasks memory-map the
    checkpoint (it must be on storage every node sees), the driver writes the `.aq` in the
    checkpoint's order, atomically. The file is byte-identical to the single-machine pipeline's for
    the same settings. A task whose worker dies is retried by Ray; a failure that does not recover
    leaves no output and names the tensor."""
    from .checkpoint import quantize_checkpoint as local_quantize_checkpoint
    scheme = check_scheme(scheme)
    report = local_quantize_checkpoint(
        src, out, bit_width=check_bits_for_scheme(bit_width, scheme), group_size=check_group_size(group_size),
        symmetric=check_symmetric(symmetric), num_threads=check_num_threads(num_cpus), method=check_method(method),
        include=include, exclude=exclude, progress_callback=progress_callback, mode="base", overwrite=overwrite,
        variant=variant, executor=ray_executor(num_cpus, max_in_flight), scheme=scheme, rotate=check_rotate(rotate))
    report.pop("_markov", None)
    return report
