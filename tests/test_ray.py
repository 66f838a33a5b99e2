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


def checkpoint(path, seed=0, n=12):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    tensors = {f"blocks.{i}.proj.weight": (0.02 * rng.standard_t(4, (64, 512))).astype(np.float32) for i in range(n)}
    tensors["blocks.0.norm.weight"] = np.ones(64, np.float32)  # carried through
    save_file(tensors, str(path))
    return tensors


@pytest.mark.parametrize("method", ["rtn", "search"])
def test_a_checkpoint_quantized_by_ray_tasks_is_byte_identical(tmp_path, method):
    checkpoint(tmp_path / "m.safetensors")
    aq.ArrowQuantV2(mode="base").quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "local.aq",
                                                           bit_width=4, group_size=64, method=method)
    report = ar.quantize_checkpoint(tmp_path / "m.safetensors", tmp_path / "ray.aq", bit_width=4, group_size=64,
                                    method=method, max_in_flight=3)
    assert (tmp_path / "ray.aq").read_bytes() == (tmp_path / "local.aq").read_bytes()
    assert report["layers_quantized"] == 12 and report["layers_carried"] == 1


def test_a_killed_worker_is_retried_and_the_output_is_still_identical(tmp_path, monkeypatch):
    checkpoint(tmp_path / "m.safetensors", seed=1)
    aq.ArrowQuantV2(mode="base").quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "local.aq",
                                                           bit_width=4, group_size=64)
    marker = tmp_path / "killed"
    monkeypatch.setenv(ar.FAULT_INJECTION_ENV, str(marker))
    ar.quantize_checkpoint(tmp_path / "m.safetensors", tmp_path / "ray.aq", bit_width=4, group_size=64)
    assert marker.read_text() == "killed once"  # a worker did die
    assert (tmp_path / "ray.aq").read_bytes() == (tmp_path / "local.aq").read_bytes()


def test_a_failing_tensor_leaves_no_output_and_is_named(tmp_path):
    tensors = checkpoint(tmp_path / "m.safetensors", seed=2, n=4)
    tensors["blocks.2.proj.weight"][5, 7] = np.inf
    from safetensors.numpy import save_file
    save_file(tensors, str(tmp_path / "m.safetensors"))
    with pytest.raises(Exception, match="layer 'blocks.2.proj.weight'.*NaN or infinity"):
        ar.quantize_checkpoint(tmp_path / "m.safetensors", tmp_path / "ray.aq")
    assert not (tmp_path / "ray.aq").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_diffusion_folders_through_ray_are_byte_identical(tmp_path):
    from arrowquant.demo import make_demo_model
    model = make_demo_model(tmp_path / "model")
    config = aq.DiffusionQuantConfig.from_profile("local")
    aq.quantize_diffusion_model(model, tmp_path / "local", config)
    from arrowquant.diffusion import quantize_diffusion_model
    quantize_diffusion_model(model, tmp_path / "ray", config, ray=True)
    for component in ("unet", "vae"):
        local = (tmp_path / "local" / component / "diffusion_pytorch_model.aq").read_bytes()
        assert (tmp_path / "ray" / component / "diffusion_pytorch_model.aq").read_bytes() == local


def test_cli_quantize_with_ray(tmp_path):
    import subprocess
    import sys
    tensors_path = tmp_path / "m.safetensors"
    checkpoint(tensors_path, seed=3, n=4)
    local = subprocess.run([sys.executable, "-m", "arrowquant", "quantize", tensors_path, tmp_path / "local.aq",
                            "--mode", "base", "--quiet"], capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    remote = subprocess.run([sys.executable, "-m", "arrowquant", "quantize", tensors_path, tmp_path / "ray.aq",
                             "--mode", "base", "--ray", "--json"], capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stderr
    assert (tmp_path / "ray.aq").read_bytes() == (tmp_path / "local.aq").read_bytes()


@pytest.mark.parametrize("method", ["ggml", "search"])
def test_gguf_through_ray_is_byte_identical(tmp_path, method):
    from arrowquant.demo import make_demo_model
    from arrowquant.gguf import convert
    model = make_demo_model(tmp_path / "model")
    local = convert(model / "unet", tmp_path / "local.gguf", type="Q4_K_M", method=method)
    remote = convert(model / "unet", tmp_path / "ray.gguf", type="Q4_K_M", method=method, ray=True)
    assert (tmp_path / "ray.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()
    assert remote["components"]["model"]["tensors"] == local["components"]["model"]["tensors"]


def test_gguf_through_ray_survives_a_killed_worker_and_the_cli_takes_ray(tmp_path, monkeypatch):
    import subprocess
    import sys
    from arrowquant.demo import make_demo_model
    from arrowquant.gguf import convert
    model = make_demo_model(tmp_path / "model")
    convert(model / "unet", tmp_path / "local.gguf", type="Q8_0")
    marker = tmp_path / "killed"
    monkeypatch.setenv(ar.FAULT_INJECTION_ENV, str(marker))
    convert(model / "unet", tmp_path / "ray.gguf", type="Q8_0", ray=True)
    assert marker.read_text() == "killed once"
    assert (tmp_path / "ray.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()
    monkeypatch.delenv(ar.FAULT_INJECTION_ENV)
    cli = subprocess.run([sys.executable, "-m", "arrowquant", "gguf", model / "unet", tmp_path / "cli.gguf", "--type",
                          "Q8_0", "--ray", "--quiet"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "cli.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()


def test_tasks_take_consecutive_tensors_of_one_file_up_to_a_size(monkeypatch):
    monkeypatch.setattr(ar, "TASK_BYTES", 100)
    monkeypatch.setattr(ar, "TASK_TENSORS", 3)
    jobs = [("a", 40), ("a", 40), ("a", 40), ("b", 10), ("b", 10), ("b", 10), ("b", 10), ("a", 200), ("a", 1)]
    batches = list(ar._task_batches(jobs, lambda j: j[0], lambda j: j[1]))
    assert batches == [[("a", 40), ("a", 40)], [("a", 40)], [("b", 10)] * 3, [("b", 10)], [("a", 200)], [("a", 1)]]
    assert [j for b in batches for j in b] == jobs  # order kept, nothing lost
