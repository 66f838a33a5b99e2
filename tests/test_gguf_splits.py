"""Split GGUF models (splits.py): written by size or tensor count and loaded by llama.cpp from the
first shard; a split source written by gguf-py read whole; --keep-split equal to llama-quantize's
shards (llama_model_quantize with keep_split) shard for shard; every damaged split one error."""

import ctypes
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import arrowquant.gguf as ag  # noqa: E402
from arrowquant.errors import FileFormatError, MissingFileError, ParameterError  # noqa: E402
from arrowquant.gguf.model_file import GgufModel
from arrowquant.gguf.splits import parse_size  # noqa: E402

from test_gguf_llm import llm, needs_llama_cpp, llama_cpp  # noqa: E402,F401
from test_gguf_requantize import (FTYPES, deep_f16_gguf, f16_gguf, metadata_of,  # noqa: E402,F401
                                  tensors_of)


def shards_of(prefix, count):
    return [prefix.parent / f"{prefix.name}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def split_keys(path):
    fields = gguf.GGUFReader(path).fields
    return tuple(fields[k].contents() if k in fields else None for k in ("split.no", "split.count",
                                                                           "split.tensors.count"))


def logits(path):
    model = llama_cpp.Llama(model_path=str(path), n_ctx=32, logits_all=True, verbose=False, n_threads=1)
    model.eval([1, 5, 9, 12])
    return np.array(model.scores[:4]).ravel()


@needs_llama_cpp
def test_a_language_model_split_by_size_loads_in_llama_cpp_from_its_first_shard(llm, tmp_path):
    folder, _, _ = llm
    whole = ag.convert(folder, tmp_path / "whole.gguf", type="Q8_0", method="ggml")
    limit = whole["bytes_after"] // 3
    report = ag.convert(folder, tmp_path / "model.gguf", type="Q8_0", method="ggml", split_max_size=limit)
    shards = report["components"]["model"]["shards"]
    count = len(shards)
    paths = shards_of(tmp_path / "model", count)
    assert count >= 3 and [s["path"] for s in shards] == [str(p) for p in paths]
    assert report["output"] == str(paths[0]) and not (tmp_path / "model.gguf").exists()
    total = len(gguf.GGUFReader(tmp_path / "whole.gguf").tensors)
    for i, path in enumerate(paths):
        assert split_keys(path) == (i, count, total)
        reader = gguf.GGUFReader(path)
        data = sum(int(t.n_bytes) for t in reader.tensors)
        assert data <= limit or len(reader.tensors) == 1  # a tensor above the limit gets a shard of its own
        assert ("tokenizer.ggml.tokens" in reader.fields) == (i == 0)  # the metadata in the first only
    merged = {}
    for path in paths:
        merged.update(tensors_of(path))
    assert merged == tensors_of(tmp_path / "whole.gguf")
    assert np.array_equal(logits(paths[0]), logits(tmp_path / "whole.gguf"))
    with GgufModel(paths[1]) as model:  # any shard opens the whole model
        assert len(model.tensors) == total and model.path == paths[0] and "split.count" not in model.metadata
    report = ag.convert(folder, tmp_path / "few.gguf", type="Q8_0", method="ggml", split_max_tensors=7)
    few = shards_of(tmp_path / "few", len(report["components"]["model"]["shards"]))
    assert [len(gguf.GGUFReader(p).tensors) for p in few[:-1]] == [7] * (len(few) - 1)


def write_split_with_gguf_py(source, prefix, per_shard):
    """The F16 model re-written as a split model by gguf-py's own writer (split_max_tensors)."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(str(prefix) + ".gguf", reader.fields["general.architecture"].contents(),
                             split_max_tensors=per_shard)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)
    for t in reader.tensors:
        array = np.asarray(t.data).reshape([int(d) for d in reversed(t.shape)])
        writer.add_tensor(t.name, array, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def split_f16(deep_f16_gguf, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("split") / "deep"
    write_split_with_gguf_py(deep_f16_gguf, prefix, 40)
    paths = sorted(prefix.parent.glob("deep-*-of-*.gguf"))
    assert len(paths) == 4
    return paths


@needs_llama_cpp
def test_a_split_source_written_by_gguf_py_is_read_whole(split_f16, deep_f16_gguf, tmp_path):
    ag.convert(deep_f16_gguf, tmp_path / "from-whole.gguf", type="Q4_K_M", method="ggml")
    report = ag.convert(split_f16[2], tmp_path / "from-split.gguf", type="Q4_K_M", method="ggml")
    assert report["input"] == str(split_f16[2]) and report["output"] == str(tmp_path / "from-split.gguf")
    assert tensors_of(tmp_path / "from-split.gguf") == tensors_of(tmp_path / "from-whole.gguf")
    keys = dict((k, v) for k, _, v in metadata_of(tmp_path / "from-split.gguf"))
    assert not any(k.startswith("split.") for k in keys)  # one file out: no split keys carried over


@needs_llama_cpp
def test_keep_split_writes_llama_quantizes_shards(split_f16, tmp_path):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.keep_split = FTYPES["Q4_K_M"], 2, True
    assert llama_cpp.llama_model_quantize(str(split_f16[0]).encode(), str(tmp_path / "llama").encode(),
                                          ctypes.byref(params)) == 0
    report = ag.convert(split_f16[0], tmp_path / "ours.gguf", type="Q4_K_M", method="ggml", keep_split=True)
    assert len(report["components"]["model"]["shards"]) == 4
    for theirs, ours in zip(shards_of(tmp_path / "llama", 4), shards_of(tmp_path / "ours", 4)):
        assert tensors_of(ours) == tensors_of(theirs), ours.name
        assert metadata_of(ours) == metadata_of(theirs), ours.name
    assert np.array_equal(logits(shards_of(tmp_path / "ours", 4)[0]), logits(shards_of(tmp_path / "llama", 4)[0]))


def test_damaged_splits_and_misused_split_options_are_one_error(split_f16, llm, tmp_path):
    import shutil
    copies = []
    for path in split_f16:
        copies.append(tmp_path / path.name)
        shutil.copy(path, copies[-1])
    copies[3].unlink()
    with pytest.raises(MissingFileError, match=r"shard 1 of 4; missing .*deep-00004-of-00004.gguf"):
        ag.convert(copies[0], tmp_path / "out.gguf")
    renamed = tmp_path / "renamed.gguf"
    shutil.copy(copies[1], renamed)
    with pytest.raises(FileFormatError, match="its name is not PREFIX-00002-of-00004.gguf"):
        ag.convert(renamed, tmp_path / "out.gguf")
    shutil.copy(split_f16[1], copies[2])  # shard 2 where shard 3 belongs
    shutil.copy(split_f16[3], copies[3])
    with pytest.raises(FileFormatError, match="says shard 1 of 4; expected shard 2 of 4"):
        ag.convert(copies[0], tmp_path / "out.gguf")
    folder, _, _ = llm
    with pytest.raises(ParameterError, match="keeps a split GGUF source's shards"):
        ag.convert(folder, tmp_path / "out.gguf", keep_split=True)
    with pytest.raises(ParameterError, match="give one"):
        ag.convert(folder, tmp_path / "out.gguf", split_max_size="1G", split_max_tensors=3)
    with pytest.raises(ParameterError, match="500M or 2G"):
        ag.convert(folder, tmp_path / "out.gguf", split_max_size="2 GB")
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())
    assert parse_size("500M") == 500 * 10**6 and parse_size("2G") == 2 * 10**9 and parse_size(4096) == 4096


def test_a_diffusion_model_is_never_split(tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    save_file({"double_blocks.0.img_attn.qkv.weight": rng.standard_normal((256, 256)).astype(np.float32),
               "img_in.weight": rng.standard_normal((256, 64)).astype(np.float32)}, str(tmp_path / "flux.safetensors"))
    with pytest.raises(ParameterError, match="read a diffusion model from one file"):
        ag.convert(tmp_path / "flux.safetensors", tmp_path / "flux.gguf", split_max_tensors=1)
    ag.convert(tmp_path / "flux.safetensors", tmp_path / "flux.gguf", type="Q8_0", arch="flux")
    with pytest.raises(ParameterError, match="so it is not split"):
        ag.convert(tmp_path / "flux.gguf", tmp_path / "flux-q4.gguf", split_max_tensors=1, allow_requantize=True)
    assert sorted(os.listdir(tmp_path)) == ["flux.gguf", "flux.safetensors"]


def test_the_command_splits_and_says_where_the_shards_are(llm, tmp_path, capsys):
    from arrowquant.cli import main
    folder, _, _ = llm
    assert main(["gguf", str(folder), str(tmp_path / "m.gguf"), "--type", "Q8_0", "--split-max-tensors", "20"]) == 0
    out = capsys.readouterr().out
    count = len(list(tmp_path.glob("m-*-of-*.gguf")))
    assert count > 1 and f"-> {shards_of(tmp_path / 'm', count)[0]} and {count - 1} more shards" in out
    with pytest.raises(SystemExit) as stopped:
        main(["gguf", str(folder), str(tmp_path / "x.gguf"), "--split-max-size", "2GB"])
    assert stopped.value.code == 2 and "argument --split-max-size: must be a size such as 500M" in capsys.readouterr().err


def test_inspect_dequantize_and_validate_read_a_split_model_whole(llm, tmp_path, capsys):
    import json
    from safetensors.numpy import load_file
    from arrowquant.cli import main
    folder, _, _ = llm
    ag.convert(folder, tmp_path / "whole.gguf", type="Q8_0")
    report = ag.convert(folder, tmp_path / "m.gguf", type="Q8_0", split_max_tensors=9)
    paths = [s["path"] for s in report["components"]["model"]["shards"]]
    assert main(["inspect", paths[1], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["shards"] == paths and len(doc["tensors"]) == len(gguf.GGUFReader(tmp_path / "whole.gguf").tensors)
    assert main(["dequantize", paths[0], str(tmp_path / "split.safetensors"), "--quiet"]) == 0
    assert main(["dequantize", str(tmp_path / "whole.gguf"), str(tmp_path / "whole.safetensors"), "--quiet"]) == 0
    a, b = load_file(str(tmp_path / "split.safetensors")), load_file(str(tmp_path / "whole.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert main(["validate", str(folder), paths[0], "--quiet"]) == 0
