"""GGUF in, GGUF out (issues 20 and 21), judged by llama-quantize's own engine: llama.cpp's
`llama_model_quantize` (the function the llama-quantize tool calls), from llama-cpp-python built
from its sdist. With method="ggml" every tensor of the file arrowquant writes from an F16 GGUF has
llama.cpp's type and bytes; an already quantized source is re-quantized only when allowed, as
llama-quantize does, and then again gives its bytes. gguf-py reads every file written."""

import ctypes
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import arrowquant.gguf as ag
from arrowquant.errors import FileFormatError, ParameterError

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_gguf_llm import llm, needs_llama_cpp, llama_cpp  # noqa: E402,F401 - the tiny llama fixture

# llama.h's LLAMA_FTYPE_MOSTLY_* of every mix arrowquant writes
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12,
          "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ4_NL": 25,
          "IQ4_XS": 30}


def tensors_of(path):
    """{name: (type, bytes)} as gguf-py reads them."""
    return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes()) for t in gguf.GGUFReader(path).tensors}


def llama_quantize(src, out, mix, allow_requantize=False, **options):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = FTYPES[mix], 2, allow_requantize
    for key, value in options.items():
        setattr(params, key, value)
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    assert status == 0


@pytest.fixture(scope="module")
def f16_gguf(llm, tmp_path_factory):
    folder, _, _ = llm
    path = tmp_path_factory.mktemp("requant") / "tiny-llama-F16.gguf"
    ag.convert(folder, path, type="F16")
    return path


@pytest.fixture(scope="module")
def deep_f16_gguf(llm, tmp_path_factory):
    """16 layers (every use_more_bits case), grouped-query attention 4, and rows of 320 and 640
    that no 256-block divides (llama.cpp's fallbacks and its Q8_0 output matrix)."""
    import torch
    import transformers
    _, _, tokenizer = llm
    folder = tmp_path_factory.mktemp("deep") / "deep-llama"
    torch.manual_seed(1)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=320, intermediate_size=640,
                                      num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=2,
                                      max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    path = folder.parent / "deep-llama-F16.gguf"
    ag.convert(folder, path, type="F16")
    return path


@needs_llama_cpp
@pytest.mark.parametrize("model", ["f16_gguf", "deep_f16_gguf"])
@pytest.mark.parametrize("mix", list(FTYPES))
def test_an_f16_gguf_requantized_in_ggml_mode_is_llama_quantizes_file_tensor_for_tensor(request, model, tmp_path, mix):
    f16_gguf = request.getfixturevalue(model)
    llama_quantize(f16_gguf, tmp_path / "llama.gguf", mix)
    report = ag.convert(f16_gguf, tmp_path / "ours.gguf", type=mix, method="ggml")
    theirs, ours = tensors_of(tmp_path / "llama.gguf"), tensors_of(tmp_path / "ours.gguf")
    assert set(ours) == set(theirs)  # llama.cpp writes them in its loader's order, arrowquant in the source's
    for name in theirs:
        assert ours[name][0] == theirs[name][0], (name, ours[name][0], theirs[name][0])
        assert ours[name][1] == theirs[name][1], name
    # every metadata entry carried over with its type; the file type says the new mix
    reader, source = gguf.GGUFReader(tmp_path / "ours.gguf"), gguf.GGUFReader(f16_gguf)
    for key, field in source.fields.items():
        if key.startswith("GGUF.") or key in ("general.file_type", "general.quantized_by"):
            continue
        assert reader.fields[key].types == field.types and reader.fields[key].contents() == field.contents(), key
    assert reader.fields["general.file_type"].contents() == FTYPES[mix]
    assert report["kind"] == "gguf" and report["components"]["model"]["architecture"] == "llama"


@needs_llama_cpp
def test_the_search_writes_the_same_types_with_lower_error_and_llama_cpp_runs_it(f16_gguf, tmp_path):
    llama_quantize(f16_gguf, tmp_path / "llama.gguf", "Q4_K_M")
    report = ag.convert(f16_gguf, tmp_path / "ours.gguf", type="Q4_K_M")
    theirs, ours = tensors_of(tmp_path / "llama.gguf"), tensors_of(tmp_path / "ours.gguf")
    assert {n: t for n, (t, _) in ours.items()} == {n: t for n, (t, _) in theirs.items()}
    with ag.open(f16_gguf) as src, ag.open(tmp_path / "llama.gguf") as a, ag.open(tmp_path / "ours.gguf") as b:
        for name, t in report["components"]["model"]["tensors"].items():
            if t["type"] not in ("Q4_K", "Q6_K"):
                continue
            x = src.dequantize(name)
            err_llama = np.linalg.norm(a.dequantize(name) - x) / np.linalg.norm(x)
            assert t["relative_rmse"] <= err_llama * 1.0001, name
    logits = {}
    for name in ("ours", "llama"):
        model = llama_cpp.Llama(model_path=str(tmp_path / f"{name}.gguf"), n_ctx=32, logits_all=True, verbose=False,
                                n_threads=1)
        model.eval([1, 5, 9, 12])
        logits[name] = np.array(model.scores[:4]).ravel()
    cosine = logits["ours"] @ logits["llama"] / np.linalg.norm(logits["ours"]) / np.linalg.norm(logits["llama"])
    assert np.isfinite(logits["ours"]).all() and cosine > 0.99


@needs_llama_cpp
def test_a_quantized_source_needs_allow_requantize_and_then_gives_llama_quantizes_bytes(f16_gguf, tmp_path):
    llama_quantize(f16_gguf, tmp_path / "q8.gguf", "Q8_0")
    with pytest.raises(ParameterError, match=r"is already Q8_0; re-quantizing it to Q[46]_K .*--allow-requantize"):
        ag.convert(tmp_path / "q8.gguf", tmp_path / "ours.gguf", type="Q4_K_M", method="ggml")
    assert not (tmp_path / "ours.gguf").exists()
    llama_quantize(tmp_path / "q8.gguf", tmp_path / "llama.gguf", "Q4_K_M", allow_requantize=True)
    ag.convert(tmp_path / "q8.gguf", tmp_path / "ours.gguf", type="Q4_K_M", method="ggml", allow_requantize=True)
    assert tensors_of(tmp_path / "ours.gguf") == tensors_of(tmp_path / "llama.gguf")
    # the same type again copies every tensor as it is, and needs no permission
    report = ag.convert(tmp_path / "q8.gguf", tmp_path / "same.gguf", type="Q8_0")
    assert {t["encoder"] for t in report["components"]["model"]["tensors"].values()} == {"copied"}
    assert tensors_of(tmp_path / "same.gguf") == tensors_of(tmp_path / "q8.gguf")


@needs_llama_cpp
@pytest.mark.parametrize("ours,theirs", [
    ({"output_tensor_type": "Q8_0", "token_embedding_type": "Q5_0"}, {"output_tensor_type": 8, "token_embedding_type": 6}),
    ({"pure": True}, {"pure": True}),
    ({"leave_output_tensor": True}, {"quantize_output_tensor": False}),
])
def test_llama_quantizes_options_give_its_bytes(deep_f16_gguf, tmp_path, ours, theirs):
    llama_quantize(deep_f16_gguf, tmp_path / "llama.gguf", "Q4_K_M", **theirs)
    ag.convert(deep_f16_gguf, tmp_path / "ours.gguf", type="Q4_K_M", method="ggml", **ours)
    assert tensors_of(tmp_path / "ours.gguf") == tensors_of(tmp_path / "llama.gguf")


def test_tensor_type_patterns_and_bad_options(deep_f16_gguf, tmp_path):
    report = ag.convert(deep_f16_gguf, tmp_path / "m.gguf", type="Q4_K_M", tensor_type=[r"attn_(q|k)\.=Q8_0"])
    types = {n: t["type"] for n, t in report["components"]["model"]["tensors"].items()}
    assert types["blk.3.attn_q.weight"] == types["blk.3.attn_k.weight"] == "Q8_0"
    assert types["blk.3.attn_output.weight"] == "Q5_0"  # Q4_K's fallback for rows of 320
    for bad, message in (({"tensor_type": ["attn_q"]}, "REGEX=TYPE"), ({"tensor_type": ["(=Q8_0"]}, "not a regular"),
                         ({"output_tensor_type": "Q9_K"}, "output_tensor_type must be a GGUF type"),
                         ({"pure": "yes"}, "pure must be True or False")):
        with pytest.raises(ParameterError, match=message):
            ag.convert(deep_f16_gguf, tmp_path / "x.gguf", **bad)
    save_file({"double_blocks.0.img_attn.proj.weight": np.ones((64, 256), np.float32)}, str(tmp_path / "f.safetensors"))
    with pytest.raises(ParameterError, match="for a diffusion model use type_for"):
        ag.convert(tmp_path / "f.safetensors", tmp_path / "f.gguf", pure=True)
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "f.gguf").exists()


def test_a_diffusion_gguf_requantized_equals_converting_its_source(tmp_path):
    rng = np.random.default_rng(0)
    save_file({"double_blocks.0.img_attn.proj.weight": rng.standard_normal((256, 512)).astype(np.float32),
               "img_in.weight": rng.standard_normal((256, 256)).astype(np.float32),
               "patch_embedding.weight": rng.standard_normal((64, 16, 1, 2, 2)).astype(np.float32),
               "double_blocks.0.norm.scale": rng.standard_normal(256).astype(np.float32)},
              str(tmp_path / "m.safetensors"))
    ag.convert(tmp_path / "m.safetensors", tmp_path / "f32.gguf", type="F32", arch="flux")
    for mix in ("Q4_K_M", "Q8_0", "Q2_K"):
        ag.convert(tmp_path / "m.safetensors", tmp_path / "direct.gguf", type=mix, arch="flux", overwrite=True)
        ag.convert(tmp_path / "f32.gguf", tmp_path / "again.gguf", type=mix, overwrite=True)
        assert tensors_of(tmp_path / "again.gguf") == tensors_of(tmp_path / "direct.gguf"), mix
    with ag.open(tmp_path / "again.gguf") as f:
        assert f.original_shape("patch_embedding.weight") == (64, 16, 1, 2, 2)


def test_bad_gguf_sources_are_one_error_and_nothing_is_written(tmp_path):
    (tmp_path / "cut.gguf").write_bytes(b"GGUF" + b"\3\0\0\0" + b"\xff" * 16)
    with pytest.raises(Exception, match="cut.gguf"):
        ag.convert(tmp_path / "cut.gguf", tmp_path / "out.gguf")
    assert sorted(os.listdir(tmp_path)) == ["cut.gguf"]


def imatrix_entries(gguf_path):
    """Random positive importances, exact in float32 after x4 and /4, for every matrix llama.cpp
    quantizes (what llama-imatrix records: the inputs of every matrix product)."""
    rng = np.random.default_rng(5)
    return {t.name: (rng.uniform(0.05, 4.0, int(t.shape[0])).astype(np.float32) * 2**-4).astype(np.float32)
            for t in gguf.GGUFReader(gguf_path).tensors if len(t.shape) == 2 and t.name != "token_embd.weight"}


def write_imatrix_gguf(path, entries, count=4.0):
    """The GGUF form llama-imatrix writes, by gguf-py: <name>.in_sum2 (sums of squares) and
    <name>.counts (tokens seen), with its imatrix.* metadata."""
    writer = gguf.GGUFWriter(str(path), arch="")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["test.txt"])
    writer.add_uint32("imatrix.chunk_count", 1)
    writer.add_uint32("imatrix.chunk_size", 512)
    for name, values in entries.items():
        writer.add_tensor(f"{name}.in_sum2", (values * np.float32(count)).reshape(1, -1))
        writer.add_tensor(f"{name}.counts", np.array([[count]], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_imatrix_dat(path, entries, ncall=4):
    """The legacy .dat form: entry count, then name length, name, call count, value count, values
    (times the call count), then the chunk count and the dataset name."""
    import struct
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, values in entries.items():
            f.write(struct.pack("<i", len(name)) + name.encode())
            f.write(struct.pack("<ii", ncall, values.size) + (values * np.float32(ncall)).astype("<f4").tobytes())
        f.write(struct.pack("<i", 1) + struct.pack("<i", 8) + b"test.txt")


def llama_quantize_with_imatrix(src, out, mix, entries, overrides=None, prune=None):
    """llama_model_quantize as llama-quantize's tool calls it: importance entries, kv overrides
    ((key, kind, value), terminated by an empty key) and layers to prune (terminated by -1)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = FTYPES[mix], 2
    Entry = llama_cpp.llama_model_imatrix_data
    keep = [(name.encode(), np.ascontiguousarray(v)) for name, v in entries.items()]
    matrix = (Entry * (len(keep) + 1))()
    for i, (name, values) in enumerate(keep):
        matrix[i].name, matrix[i].data = name, values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        matrix[i].size = values.size
    matrix[len(keep)].name = None
    params.imatrix = ctypes.cast(matrix, ctypes.POINTER(Entry))
    if overrides:
        kv = kv_overrides_array(overrides)
        params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    if prune:
        layers = (ctypes.c_int32 * (len(prune) + 1))(*prune, -1)
        params.prune_layers = ctypes.cast(layers, ctypes.POINTER(ctypes.c_int))
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params)) == 0


@needs_llama_cpp
@pytest.mark.parametrize("mix", ["Q4_K_M", "Q5_K_M", "Q6_K", "Q4_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "IQ4_XS",
                                 "IQ4_NL"])
@pytest.mark.parametrize("form", ["gguf", "dat"])
@pytest.mark.parametrize("model", ["f16_gguf", "deep_f16_gguf"])  # rows of 256; rows of 320 and 640 (fallbacks)
def test_an_importance_matrix_gives_llama_quantizes_bytes(request, model, tmp_path, mix, form):
    deep_f16_gguf = request.getfixturevalue(model)
    entries = imatrix_entries(deep_f16_gguf)
    path = tmp_path / f"imatrix.{form}"
    (write_imatrix_gguf if form == "gguf" else write_imatrix_dat)(path, entries)
    llama_quantize_with_imatrix(deep_f16_gguf, tmp_path / "llama.gguf", mix, entries)
    report = ag.convert(deep_f16_gguf, tmp_path / "ours.gguf", type=mix, imatrix=path, method="ggml")
    assert tensors_of(tmp_path / "ours.gguf") == tensors_of(tmp_path / "llama.gguf")
    encoders = {t["encoder"] for t in report["components"]["model"]["tensors"].values()}
    assert "ggml-imatrix" in encoders


def test_bad_importance_matrices_are_one_error_and_nothing_is_written(deep_f16_gguf, tmp_path):
    (tmp_path / "cut.dat").write_bytes(b"\x01\x00\x00\x00\x10\x00\x00\x00blk.0.at")
    (tmp_path / "huge.dat").write_bytes(b"\xff\xff\xff\x7f" + b"\0" * 32)
    write_imatrix_dat(tmp_path / "short.dat", {"blk.0.attn_q.weight": np.ones(100, np.float32)})
    write_imatrix_dat(tmp_path / "nan.dat", {"blk.0.attn_q.weight": np.full(320, np.nan, np.float32)})
    for name, kwargs, message in (("cut.dat", {}, "entry 0 has a name of 16 bytes"),
                                  ("huge.dat", {}, "claims 2147483647 importance entries"),
                                  ("short.dat", {}, "importance entry for 'blk.0.attn_q.weight' holds 100 values"),
                                  ("nan.dat", {}, "holds NaN or Inf")):
        with pytest.raises((ParameterError, FileFormatError), match=message):
            ag.convert(deep_f16_gguf, tmp_path / "out.gguf", imatrix=tmp_path / name, **kwargs)
        assert not (tmp_path / "out.gguf").exists()


def kv_overrides_array(overrides):
    """llama_model_kv_override entries as llama-quantize's tool builds them (terminated by an
    empty key): (key, 'int'|'float'|'bool'|'str', value)."""
    Override = llama_cpp.llama_model_kv_override
    array = (Override * (len(overrides) + 1))()
    for item, (key, kind, value) in zip(array, overrides):
        item.key = key.encode()
        if kind == "int":
            item.tag, item.value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, value
        elif kind == "float":
            item.tag, item.value.val_f64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT, value
        elif kind == "bool":
            item.tag, item.value.val_bool = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL, value
        else:
            item.tag, item.value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, value.encode()
    array[len(overrides)].key = b""
    return array


def metadata_of(path):
    """[(key, value types, contents)] in file order, without arrowquant's own signature."""
    return [(key, field.types, field.contents()) for key, field in gguf.GGUFReader(path).fields.items()
            if not key.startswith("GGUF.") and key != "general.quantized_by"]


@needs_llama_cpp
@pytest.mark.parametrize("form", ["gguf", "dat"])
def test_override_kv_and_the_imatrix_record_are_llama_quantizes_metadata(deep_f16_gguf, tmp_path, form):
    """--override-kv (an int as u32 of its absolute value, a float as f32, a bool, a string) and,
    with an importance matrix, the quantize.imatrix.* keys llama-quantize's tool adds (the file as
    given, the first dataset, entry and chunk counts after --include-weights), each removed and
    set again at the end: the whole metadata, keys, order, types and values, is llama.cpp's; the
    tensors too, with only the included entries used."""
    entries = imatrix_entries(deep_f16_gguf)
    path = tmp_path / f"imatrix.{form}"
    (write_imatrix_gguf if form == "gguf" else write_imatrix_dat)(path, entries)
    included = {name: v for name, v in entries.items() if "ffn_down" in name or "attn_v" in name}
    user = [("general.name", "str", "Renamed model"), ("llama.context_length", "int", -4096),
            ("test.ratio", "float", 0.25), ("test.flag", "bool", True)]
    tool = [("quantize.imatrix.file", "str", str(path)), ("quantize.imatrix.dataset", "str", "test.txt"),
            ("quantize.imatrix.entries_count", "int", len(included)), ("quantize.imatrix.chunks_count", "int", 1)]
    llama_quantize_with_imatrix(deep_f16_gguf, tmp_path / "llama.gguf", "Q4_K_M", included, overrides=user + tool)
    ag.convert(deep_f16_gguf, tmp_path / "ours.gguf", type="Q4_K_M", method="ggml", imatrix=path,
               include_weights=["ffn_down", "attn_v"],
               override_kv=["general.name=str:Renamed model", "llama.context_length=int:-4096",
                            "test.ratio=float:0.25", "test.flag=bool:true"])
    assert metadata_of(tmp_path / "ours.gguf") == metadata_of(tmp_path / "llama.gguf")
    assert tensors_of(tmp_path / "ours.gguf") == tensors_of(tmp_path / "llama.gguf")
    # --exclude-weights drops entries the same way (a name part, as llama-quantize's find())
    report = ag.convert(deep_f16_gguf, tmp_path / "ex.gguf", type="Q4_K_M", method="ggml", imatrix=path,
                        exclude_weights=["blk.", "output"])
    encoders = {t["encoder"] for t in report["components"]["model"]["tensors"].values()}
    assert "ggml-imatrix" not in encoders
    fields = gguf.GGUFReader(tmp_path / "ex.gguf").fields
    assert "quantize.imatrix.file" not in fields  # no entry left: quantized without one, nothing recorded


def test_bad_kv_overrides_and_weight_filters_are_one_error(f16_gguf, tmp_path):
    for kwargs, message in (({"override_kv": ["x"]}, "KEY=TYPE:VALUE"),
                            ({"override_kv": ["x=int:1.5"]}, "'1.5' is not a whole number"),
                            ({"override_kv": ["x=int:4294967296"]}, "does not fit"),
                            ({"override_kv": ["x=bool:yes"]}, "a bool is true or false"),
                            ({"override_kv": ["x=float:1e40"]}, "not a finite float32"),
                            ({"override_kv": ["x=str:" + "a" * 128]}, "at most 127 bytes"),
                            ({"override_kv": ["x=list:1"]}, "needs a type"),
                            ({"include_weights": ["attn"]}, "pass one with imatrix="),
                            ):
        with pytest.raises(ParameterError, match=message):
            ag.convert(f16_gguf, tmp_path / "out.gguf", **kwargs)
        assert not (tmp_path / "out.gguf").exists()
    write_imatrix_dat(tmp_path / "m.dat", {"blk.0.attn_q.weight": np.ones(64, np.float32)})
    with pytest.raises(ParameterError, match="cannot be used together"):
        ag.convert(f16_gguf, tmp_path / "out.gguf", imatrix=tmp_path / "m.dat", include_weights="a",
                   exclude_weights="b")


def test_the_command_takes_llama_quantizes_metadata_and_imatrix_options(f16_gguf, tmp_path):
    from arrowquant.cli import main
    entries = imatrix_entries(f16_gguf)
    write_imatrix_dat(tmp_path / "m.dat", entries)
    assert main(["gguf", str(f16_gguf), str(tmp_path / "q.gguf"), "--type", "Q4_K_M", "--quiet", "--imatrix",
                 str(tmp_path / "m.dat"), "--exclude-weights", "attn_q", "--override-kv", "general.name=str:X",
                 "--override-kv", "test.n=int:7"]) == 0
    fields = gguf.GGUFReader(tmp_path / "q.gguf").fields
    assert fields["general.name"].contents() == "X" and fields["test.n"].contents() == 7
    assert fields["quantize.imatrix.entries_count"].contents() == sum("attn_q" not in n for n in entries)


@needs_llama_cpp
@pytest.mark.parametrize("mix", ["Q4_K_M", "Q3_K_M"])
def test_prune_layers_is_llama_quantizes(deep_f16_gguf, tmp_path, mix):
    """--prune-layers: the layers left out, the rest renumbered, block_count set last, the
    attn_v rules counting the attn_v tensors left, the imatrix looked up by the original names;
    the whole metadata and every tensor equal llama_model_quantize's with the same prune list."""
    entries = imatrix_entries(deep_f16_gguf)
    write_imatrix_dat(tmp_path / "m.dat", entries)
    overrides = [("quantize.imatrix.file", "str", str(tmp_path / "m.dat")), ("quantize.imatrix.dataset", "str", "test.txt"),
                 ("quantize.imatrix.entries_count", "int", len(entries)), ("quantize.imatrix.chunks_count", "int", 1)]
    llama_quantize_with_imatrix(deep_f16_gguf, tmp_path / "llama.gguf", mix, entries, overrides=overrides,
                                prune=[1, 5, 6, 15])
    report = ag.convert(deep_f16_gguf, tmp_path / "ours.gguf", type=mix, method="ggml", prune_layers="15,1,5,6",
                        imatrix=tmp_path / "m.dat")
    assert metadata_of(tmp_path / "ours.gguf") == metadata_of(tmp_path / "llama.gguf")
    assert tensors_of(tmp_path / "ours.gguf") == tensors_of(tmp_path / "llama.gguf")
    names = report["components"]["model"]["tensors"]
    assert "blk.11.attn_q.weight" in names and "blk.12.attn_q.weight" not in names
    assert gguf.GGUFReader(tmp_path / "ours.gguf").fields["llama.block_count"].contents() == 12
    model = llama_cpp.Llama(model_path=str(tmp_path / "ours.gguf"), n_ctx=32, verbose=False, n_threads=1)
    model.eval([1, 5, 9])  # llama.cpp runs the pruned model
    for bad, message in (("3,99", r"prune_layers \[99\] name no layer"), ("a,b", "layer numbers such as"),
                         (list(range(16)), "would leave none")):
        with pytest.raises(ParameterError, match=message):
            ag.convert(deep_f16_gguf, tmp_path / "bad.gguf", prune_layers=bad)
    assert not (tmp_path / "bad.gguf").exists()


def test_a_dry_run_reports_the_sizes_it_would_write_and_writes_nothing(deep_f16_gguf, llm, tmp_path):
    folder, _, _ = llm
    for source, kwargs in ((deep_f16_gguf, {}), (deep_f16_gguf, {"split_max_tensors": 50}), (folder, {})):
        dry = ag.convert(source, tmp_path / "dry.gguf", type="Q4_K_M", dry_run=True, **kwargs)
        assert dry["dry_run"] and not list(tmp_path.glob("dry*"))
        real = ag.convert(source, tmp_path / "real.gguf", type="Q4_K_M", **kwargs)
        assert not real["dry_run"] and dry["bytes_after"] == real["bytes_after"]
        sizes = [os.path.getsize(s["path"]) for s in real["components"]["model"].get("shards", [])] or \
            [os.path.getsize(real["output"])]
        assert sum(sizes) == dry["bytes_after"]
        d, r = dry["components"]["model"]["tensors"], real["components"]["model"]["tensors"]
        assert {n: (t["type"], t["bytes_after"]) for n, t in d.items()} == \
            {n: (t["type"], t["bytes_after"]) for n, t in r.items()}
        for p in tmp_path.glob("real*"):
            p.unlink()


def test_the_command_reads_tensor_type_files_and_dry_runs(f16_gguf, tmp_path, capsys):
    from arrowquant.cli import main
    (tmp_path / "types.txt").write_text("attn_q=Q8_0\n  ffn_up=q5_k ffn_gate=Q6_K\n")
    assert main(["gguf", str(f16_gguf), str(tmp_path / "q.gguf"), "--tensor-type-file", str(tmp_path / "types.txt"),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: the types and sizes above were decided; nothing was quantized or written" in out
    assert not (tmp_path / "q.gguf").exists()
    assert main(["gguf", str(f16_gguf), str(tmp_path / "q.gguf"), "--tensor-type-file", str(tmp_path / "types.txt"),
                 "--quiet"]) == 0
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.1.ffn_up.weight"] == "Q5_K"
    assert types["blk.0.ffn_gate.weight"] == "Q6_K"
    (tmp_path / "bad.txt").write_text("attn_q=Q8_0 ffn_up=Q9\n")
    assert main(["gguf", str(f16_gguf), str(tmp_path / "b.gguf"), "--tensor-type-file", str(tmp_path / "bad.txt")]) == 1
    assert "bad.txt: entry 'ffn_up=Q9': 'Q9' is not a GGUF tensor type" in capsys.readouterr().err


def test_mixes_are_also_named_by_llama_quantizes_numeric_ids():
    from arrowquant.gguf.policy import check_mix
    assert all(check_mix(str(ftype)) == mix and check_mix(ftype) == mix for mix, ftype in FTYPES.items())
    with pytest.raises(ParameterError, match="got '99'"):
        check_mix("99")
