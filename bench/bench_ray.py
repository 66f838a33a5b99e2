"""arrowquant.ray against the single-process pipeline, same run: a checkpoint through
quantize_checkpoint and a dataset through quantize_dataset, on a local Ray cluster of 1 and 2 CPUs
(each in a fresh process; Ray's start-up is reported apart), and the overhead per batch.

    python bench/bench_ray.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from bench_common import bench_args, emit

RUN = r"""
import json, sys, time
import numpy as np, pyarrow as pa
mode, cpus, src, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
import arrowquant as aq
if mode == "local":
    t0 = time.perf_counter()
    aq.ArrowQuantV2(mode="base", num_threads=cpus).quantize_from_safetensors(src, out, bit_width=4, method="rtn", overwrite=True)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    sys.exit()
import ray
t0 = time.perf_counter()
ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
startup = time.perf_counter() - t0
import arrowquant.ray as ar
t0 = time.perf_counter()
if mode == "checkpoint":
    ar.quantize_checkpoint(src, out, bit_width=4, method="rtn", overwrite=True)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "startup": startup}))
else:
    rng = np.random.default_rng(0)
    rows = int(sys.argv[5])
    w = rng.standard_normal(rows * 16384).astype(np.float32)
    table = pa.table({"layer_name": [f"l{i}" for i in range(rows)],
                      "weights": pa.LargeListArray.from_arrays(pa.array(np.arange(0, rows * 16384 + 1, 16384), pa.int64()), pa.array(w))})
    blocks = int(sys.argv[6])
    ds = ray.data.from_arrow(table).repartition(blocks).materialize()
    t0 = time.perf_counter()
    n = sum(b.num_rows for b in ray.get(ar.quantize_dataset(ds, bit_width=4, num_cpus=1).to_arrow_refs()))
    print(json.dumps({"seconds": time.perf_counter() - t0, "startup": startup, "rows": n}))
"""


def run(*args) -> dict:
    r = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    args = bench_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.safetensors"
        rng = np.random.default_rng(0)
        n = 4 if args.quick else 48
        save_file({f"blocks.{i}.weight": rng.standard_normal((1024, 2048), dtype=np.float32) for i in range(n)}, str(src))
        mb = src.stat().st_size / 1e6
        result: dict = {"checkpoint_mb": mb}
        for cpus in (1, 2):
            local = run("local", cpus, src, Path(tmp) / "local.aq")
            ray_run = run("checkpoint", cpus, src, Path(tmp) / "ray.aq")
            result[f"checkpoint_{cpus}cpu"] = {"local_mb_s": mb / local["seconds"], "ray_mb_s": mb / ray_run["seconds"],
                                               "ray_startup_s": ray_run["startup"]}
        rows = 64 if args.quick else 512
        for blocks in (8, 64):
            r = run("dataset", 2, "-", "-", rows, blocks)
            result[f"dataset_{blocks}_blocks"] = {"mb_s": rows * 16384 * 4 / 1e6 / r["seconds"],
                                                  "seconds_per_batch_ms": 1e3 * r["seconds"] / blocks}
    emit(result, args.json)


if __name__ == "__main__":
    main()
