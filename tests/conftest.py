import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import settings

# CI replays the same examples every run (derandomize) so a landing never depends on luck; runs by
# hand explore new random examples (and raise the budget with ARROWQUANT_FUZZ_EXAMPLES).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

import arrowquant as aq

SIMD_PATHS = aq.simd_info()["supported"]


@pytest.fixture(params=SIMD_PATHS)
def simd_path(request):
    """Runs the test once per SIMD path this CPU supports, restoring the automatic choice after."""
    aq.set_simd_path(request.param)
    yield request.param
    aq.set_simd_path("auto")


def make_table(layers: dict, *, float16: bool = False, with_shape: bool = True) -> pa.Table:
    """A quantize input table from {name: ndarray}."""
    value_type = pa.float16() if float16 else pa.float32()
    names = list(layers)
    arrays = [np.ascontiguousarray(layers[n]) for n in names]
    columns = {
        "layer_name": pa.array(names, pa.string()),
        "weights": pa.array([a.reshape(-1).astype(np.float16 if float16 else np.float32) for a in arrays],
                            pa.list_(value_type)),
    }
    if with_shape:
        columns["shape"] = pa.array([list(a.shape) for a in arrays], pa.list_(pa.int64()))
    return pa.table(columns)


def heavy_tailed(rng, shape, scale=0.02):
    return (scale * rng.standard_t(4, size=shape)).astype(np.float32)
