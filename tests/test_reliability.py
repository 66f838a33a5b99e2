"""Leaks, concurrency and resource limits: every public entry point called 10,000 times (valid and
invalid input) leaves memory flat; threads do not disturb each other; allocation failure is a
MemoryError. ARROWQUANT_LEAK_CALLS lowers the count for a quick local run."""

import gc
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pyarrow as pa
import pytest
from conftest import make_table
from safetensors.numpy import save_file

import arrowquant as aq

CALLS = int(os.environ.get("ARROWQUANT_LEAK_CALLS", "10000"))
# Under `make sanitize` ASan keeps freed memory in quarantine (RSS grows by design) and owns the
# address space (RLIMIT_AS breaks it); LeakSanitizer does the leak checking there instead.
SANITIZED = bool(os.environ.get("ARROWQUANT_SANITIZED"))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def assert_flat(call, calls=CALLS, slack_mb=8):
    for _ in range(min(300, calls)):  # warm caches, allocator arenas, interned strings
        call()
    gc.collect()
    rss_before, arrow_before = rss(), pa.total_allocated_bytes()
    for _ in range(calls):
        call()
    gc.collect()
    grown = (rss() - rss_before) / 2**20
    assert SANITIZED or grown < slack_mb, f"resident memory grew by {grown:.1f} MB over {calls} calls"
    assert pa.total_allocated_bytes() <= arrow_before, "Arrow memory not returned"


def expect_error(fn, error=aq.ArrowQuantError):
    def call():
        with pytest.raises(error):
            fn()
    return call


rng = np.random.default_rng(0)
W = rng.standard_normal((8, 64)).astype(np.float32)
TABLE = make_table({"a": W, "b": W[:2]})
BAD_TABLE = make_table({"nan": np.full(16, np.nan, np.float32)})
Q = aq.ArrowQuantV2(group_size=32)


def fresh_table():
    """New Arrow buffers each call, so a C Data Interface struct that is not released keeps them alive."""
    return pa.table({"layer_name": ["x"], "weights": pa.array([rng.standard_normal(256).astype(np.float32)],
                                                              pa.list_(pa.float32()))})


ARRAY_CALLS = {
    "quantize_arrow": lambda: Q.quantize_arrow(fresh_table(), 4),
    "quantize_arrow_error": expect_error(lambda: Q.quantize_arrow(BAD_TABLE, 4)),
    "quantize_arrow_bad_bits": expect_error(lambda: Q.quantize_arrow(TABLE, 3)),
    "quantize_arrow_batch": lambda: Q.quantize_arrow_batch(fresh_table().to_batches()[0], 2),
    "dequantize_arrow": lambda: Q.dequantize_arrow(Q.quantize_arrow(fresh_table(), 8)),
    "dequantize_arrow_error": expect_error(lambda: Q.dequantize_arrow(TABLE)),
    "quantize": lambda: Q.quantize(W, 4, method="search").dequantize(),
    "quantize_error": expect_error(lambda: Q.quantize(np.full(8, np.inf, np.float32))),
    "quantize_batch": lambda: Q.quantize_batch({"a": W, "b": W[:3]}),
    "quantize_batch_with_progress": lambda: Q.quantize_batch_with_progress({"a": W}, progress_callback=lambda n, f: None),
    "dequantize": lambda: aq.dequantize(Q.quantize(W)),
    "get_markov_metrics": lambda: Q.get_markov_metrics(),
}


@pytest.mark.parametrize("name", sorted(ARRAY_CALLS))
def test_array_entry_points_do_not_leak(name):
    assert_flat(ARRAY_CALLS[name])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("leak")
    # w large enough to be quantized by default (a run that quantizes nothing is refused)
    save_file({"w": np.tile(W, (4, 1)), "b": np.arange(4, dtype=np.int64)}, str(d / "m.safetensors"))
    (d / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    Q.quantize_from_safetensors(d / "m.safetensors", d / "m.aq")
    return d


def test_file_entry_points_do_not_leak(files):
    d = files
    calls = max(1, CALLS // 4)  # each of the four below, so the file test totals CALLS calls
    assert_flat(lambda: Q.quantize_from_safetensors(d / "m.safetensors", d / "out.aq", overwrite=True), calls)
    assert_flat(expect_error(lambda: Q.quantize_from_safetensors(d / "bad.safetensors", d / "out2.aq")), calls)

    def read():
        with aq.open(d / "m.aq") as f:
            f.dequantize("w")
            f.tensor("b")
    assert_flat(read, calls)
    assert_flat(lambda: aq.validate_quality(d / "m.safetensors", d / "m.aq"), calls)
    assert not [p for p in os.listdir(d) if "partial" in p]


def test_threads_give_sequential_bytes_and_an_error_does_not_disturb_others():
    tables = [make_table({"w": rng.standard_normal((200, 512)).astype(np.float32)}) for _ in range(3)]
    shared = tables[0]
    expected = [aq.ArrowQuantV2(group_size=128).quantize_arrow(t, 4, method=m) for t in tables for m in ("rtn", "search")]
    results, errors, failures = {}, [], []

    def worker(k):
        try:
            for _ in range(4):
                t = shared if k % 2 else tables[k % 3]
                m = "search" if k % 3 == 0 else "rtn"
                out = aq.ArrowQuantV2(group_size=128).quantize_arrow(t, 4, method=m)
                aq.ArrowQuantV2().dequantize_arrow(out)
                results[k] = (t, m, out)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def failing():
        for _ in range(20):
            try:
                aq.ArrowQuantV2().quantize_arrow(BAD_TABLE, 4)
            except aq.DataError as e:
                failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)] + [threading.Thread(target=failing)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(failures) == 20
    for k, (t, m, out) in results.items():
        assert out.equals(expected[tables.index(t) * 2 + (m == "search")])


@pytest.mark.skipif(SANITIZED, reason="ASan reserves the address space itself")
def test_allocation_failure_is_a_memory_error():
    script = textwrap.dedent("""
        import resource
        import numpy as np
        import arrowquant as aq
        q = aq.ArrowQuantV2(num_threads=1)
        w = np.zeros((4096, 4096), np.float32)  # 64 MB in; dequantizing it needs another 64 MB
        qt = q.quantize(w, 8)
        vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 16 * 2**20, resource.RLIM_INFINITY))
        try:
            qt.dequantize()
        except MemoryError:
            print("MemoryError")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "MemoryError"
