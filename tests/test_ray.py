"""arrowquant.ray on a local Ray cluster (ray.init(num_cpus=2), torn down after): datasets from
memory and from Parquet, several blocks, byte identity with the local path, errors from tasks."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import arrowquant as aq

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
import arrowquant.ray as ar  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, object_store_memory=256 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def layers_table(n=24, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [(0.02 * rng.standard_t(4, (32, 256))).astype(np.float32) for _ in range(n)]
    return pa.table({"layer_name": [f"layer{i}" for i in range(n)],
                     "weights": pa.array([a.reshape(-1) for a in arrays], pa.list_(pa.float32())),
                     "shape": pa.array([list(a.shape) for a in arrays], pa.list_(pa.int64()))})


def by_name(table, column):
    return dict(zip(table.column("layer_name").to_pylist(), table.column(column).to_pylist()))


def collect(ds):
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


@pytest.mark.parametrize("method", ["rtn", "search"])
def test_quantize_dataset_gives_the_local_bytes_over_many_blocks(method):
    table = layers_table()
    ds = ray.data.from_arrow(table).repartition(5)
    out = collect(ar.quantize_dataset(ds, bit_width=4, group_size=64, method=method, num_cpus=1))
    local = aq.ArrowQuantV2(group_size=64, method=method).quantize_arrow(table, 4)
    assert out.num_rows == table.num_rows
    for column in ("quantized_data", "scales", "zero_points", "shape"):
        assert by_name(out, column) == by_name(local, column)


def test_parquet_source_and_dequantize_round_trip(tmp_path):
    table = layers_table(seed=1)
    pq.write_table(table, tmp_path / "layers.parquet", row_group_size=5)
    quantized = ar.quantize_dataset(ray.data.read_parquet(str(tmp_path / "layers.parquet")), bit_width=8,
                                    group_size=128, num_cpus=2)
    restored = collect(ar.dequantize_dataset(quantized))
    local = aq.ArrowQuantV2().dequantize_arrow(aq.ArrowQuantV2().quantize_arrow(table, 8))
    assert by_name(restored, "weights") == by_name(local, "weights")


def test_bad_rows_fail_with_the_layer_name_and_bad_settings_before_any_task():
    table = layers_table(n=4)
    weights = table.column("weights").to_pylist()
    weights[2][7] = float("nan")
    bad = table.set_column(1, "weights", pa.array(weights, pa.list_(pa.float32())))
    with pytest.raises(Exception, match="layer 'layer2'.*NaN"):
        collect(ar.quantize_dataset(ray.data.from_arrow(bad)))
    with pytest.raises(aq.ParameterError, match="bit_width must be 2, 4 or 8"):
        ar.quantize_dataset(ray.data.from_arrow(table), bit_width=3)
