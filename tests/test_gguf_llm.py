"""Language models to GGUF, judged by llama.cpp itself (llama-cpp-python built from its sdist):
a llama-architecture model that transformers builds (random weights, fixed seed) with a byte-level
BPE tokenizer trained in the test, converted by arrowquant.gguf.convert, loaded by llama.cpp, its
logits compared with transformers' on the same tokens; gguf-py reads the metadata."""

import os

import numpy as np
import pytest

import arrowquant.gguf as ag
from arrowquant.errors import FileFormatError, ParameterError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")

try:
    import llama_cpp
except ImportError:
    if os.environ.get("ARROWQUANT_REQUIRE_REFEREES"):
        raise
    llama_cpp = None
needs_llama_cpp = pytest.mark.skipif(llama_cpp is None, reason="llama-cpp-python is not installed (make test builds it)")

TEXT = ["the quick brown fox jumps over the lazy dog", "a red cat sleeps on a sunny windowsill",
        "diffusion models generate images", "quantization makes models smaller and faster"]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    folder = tmp_path_factory.mktemp("llm") / "tiny-llama"
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(TEXT * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def llama_logits(path, tokens):
    model = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    model.eval(tokens)
    return np.array(model.scores[:len(tokens)]), model


def test_metadata_and_names_as_llama_cpp_expects(llm, tmp_path):
    folder, model, tokenizer = llm
    report = ag.convert(folder, tmp_path / "m.gguf", type="Q4_K_M")
    assert report["kind"] == "llm" and report["components"]["model"]["architecture"] == "llama"
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.embedding_length"] == 256 and fields["llama.feed_forward_length"] == 512
    assert fields["tokenizer.ggml.model"] == "gpt2" and len(fields["tokenizer.ggml.tokens"]) == len(tokenizer)
    assert fields["tokenizer.ggml.tokens"][tokenizer.bos_token_id] == "<s>"
    assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    names = {t.name: t for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.attn_q.weight",
            "blk.1.ffn_down.weight"} <= set(names)
    types = {n: t["type"] for n, t in report["components"]["model"]["tensors"].items()}
    assert types["output.weight"] == "Q6_K" and types["blk.0.attn_norm.weight"] == "F32"
    # llama-quantize's Q4_K_M: attn_v and ffn_down in Q6_K in the layers use_more_bits picks (of 2: the last)
    assert types["blk.1.attn_v.weight"] == types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == types["blk.0.ffn_down.weight"] == "Q4_K"
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    # the query projection is stored permuted for llama.cpp's rope: rows regrouped within each head
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    stored = gguf.quants.dequantize(names["blk.0.attn_q.weight"].data, names["blk.0.attn_q.weight"].tensor_type)
    permuted = q.reshape(4, 2, 32, 256).swapaxes(1, 2).reshape(256, 256)
    assert np.corrcoef(stored.reshape(-1), permuted.reshape(-1))[0, 1] > 0.99


def transformers_from_gguf(path, model):
    """The model with the weights gguf-py decodes from our file (query / key projections permuted
    back): what llama.cpp should compute if it reads the file as written."""
    import copy
    from arrowquant.gguf.llm import TENSOR_NAMES
    reader = gguf.GGUFReader(str(path))
    stored = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    clone = copy.deepcopy(model)
    state = {}
    for name, tensor in clone.state_dict().items():
        for pattern, target, permute in TENSOR_NAMES:
            m = pattern.match(name)
            if m:
                w = np.asarray(stored[target.format(*m.groups())], np.float32).reshape(tensor.shape)
                if permute:
                    heads = 4 if permute == "q" else 2
                    w = w.reshape(heads, w.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(tensor.shape)
                state[name] = torch.from_numpy(np.ascontiguousarray(w))
    clone.load_state_dict(state, strict=False)
    return clone


@needs_llama_cpp
@pytest.mark.parametrize("mix,floor", [("F32", 0.99999), ("Q8_0", 0.999), ("Q4_K_M", 0.95)])
def test_llama_cpp_runs_the_file_like_transformers(llm, tmp_path, mix, floor):
    """llama.cpp's logits equal transformers' on the weights the file holds (so llama.cpp reads
    names, layout, permutation, hyper-parameters and blocks as written), and stay near the float
    model's (random tiny weights are sensitive: measured cosines 0.99976 at Q8_0, 0.977 at Q4_K_M)."""
    folder, model, tokenizer = llm
    ag.convert(folder, tmp_path / "m.gguf", type=mix)
    tokens = tokenizer("the quick brown fox jumps over a sunny windowsill").input_ids
    ours, runner = llama_logits(tmp_path / "m.gguf", tokens)
    with torch.no_grad():
        float_logits = model(torch.tensor([tokens])).logits[0].numpy()
        as_stored = transformers_from_gguf(tmp_path / "m.gguf", model)(torch.tensor([tokens])).logits[0].numpy()
    def cosines(reference):
        return [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ours, reference)]

    # llama.cpp quantizes activations for its quantized dot products (Q8_0 / Q8_K): not bit for bit
    if mix == "F32":
        assert np.abs(ours - as_stored).max() < 1e-3 * np.abs(as_stored).max()
    assert min(cosines(as_stored)) >= 0.999
    assert min(cosines(float_logits)) >= floor
    assert runner.tokenize("the quick brown fox".encode(), add_bos=False) == tokenizer("the quick brown fox").input_ids


def test_unsupported_models_and_tokenizers_are_named(llm, tmp_path):
    import json
    import shutil
    folder, _, _ = llm
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ParameterError, match="no tokenizer.json"):
        ag.convert(copy, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    shutil.copy(folder / "tokenizer.json", copy / "tokenizer.json")
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["model.layers.0.mlp.extra_proj.weight"] = np.zeros((4, 4), np.float32)
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ParameterError, match="'model.layers.0.mlp.extra_proj.weight' has no GGUF name"):
        ag.convert(copy, tmp_path / "x.gguf")
    config = json.loads((copy / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


TRICKY = "Hello, World! It's 2026: 12345 tokens...\nNew line\tand  spaces; don't stop."


def tiny_llama_with(tmp_path, pre_tokenizer):
    from tokenizers import Tokenizer, decoders, models, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizer
    tk.decoder = decoders.ByteLevel()
    from tokenizers import pre_tokenizers
    tk.train_from_iterator((TEXT + [TRICKY]) * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(1)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path / "model"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


@needs_llama_cpp
@pytest.mark.parametrize("style", ["gpt-2", "llama-bpe"])
def test_llama_cpp_splits_text_as_the_tokenizer_does(tmp_path, style):
    """The pre-tokenizer is named for llama.cpp from tokenizer.json (GPT-2's byte-level regex, or
    Llama 3's split): llama.cpp then tokenizes punctuation, digits, apostrophes and newlines as the
    Hugging Face tokenizer does."""
    from arrowquant.gguf.llm import LLAMA3_SPLIT
    from tokenizers import Regex, pre_tokenizers
    pre = (pre_tokenizers.ByteLevel(add_prefix_space=False) if style == "gpt-2" else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    folder, tokenizer = tiny_llama_with(tmp_path, pre)
    ag.convert(folder, tmp_path / "m.gguf", type="F32")
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert reader.fields["tokenizer.ggml.pre"].contents() == style
    runner = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, verbose=False, n_threads=1)
    assert runner.tokenize(TRICKY.encode(), add_bos=False) == tokenizer(TRICKY).input_ids


def test_an_unknown_pre_tokenizer_is_refused(tmp_path):
    from tokenizers import pre_tokenizers
    folder, _ = tiny_llama_with(tmp_path, pre_tokenizers.Whitespace())
    with pytest.raises(ParameterError, match="pre-tokenizer .*Whitespace.* llama.cpp would tokenize text differently"):
        ag.convert(folder, tmp_path / "m.gguf", type="F32")
    assert not (tmp_path / "m.gguf").exists()


# Text SentencePiece's byte fallback, digits, runs of spaces and newlines all touch.
SPM_TRICKY = "Hello, World! It's 2026: 12345 tokens...\nNew line\tand  spaces; don't stop. Ünïcödé ✓ 東京"


def train_sentencepiece(path, **options):
    spm = pytest.importorskip("sentencepiece")
    import io
    settings = dict(model_type="bpe", vocab_size=400, byte_fallback=True, normalization_rule_name="identity",
                    remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True, unk_id=0, bos_id=1,
                    eos_id=2, pad_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    settings.update(options)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter((TEXT + [TRICKY]) * 30), model_writer=model, **settings)
    path.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(path))


@pytest.fixture(scope="module")
def spm_llama(tmp_path_factory):
    """A Llama-2-style model: a SentencePiece BPE tokenizer.model (byte fallback, identity
    normalizer, dummy prefix), loaded and saved by transformers' LlamaTokenizer."""
    folder = tmp_path_factory.mktemp("spm") / "tiny-llama-spm"
    folder.mkdir()
    sp = train_sentencepiece(folder / "tokenizer.model")
    tokenizer = transformers.LlamaTokenizer.from_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(2)
    config = transformers.LlamaConfig(vocab_size=sp.vocab_size() + 8, hidden_size=128, intermediate_size=256,
                                      num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128,
                                      bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return folder, sp, tokenizer, model


@needs_llama_cpp
def test_sentencepiece_tokenizers_tokenize_in_llama_cpp_as_in_sentencepiece(spm_llama, tmp_path):
    """tokenizer.model becomes llama.cpp's 'llama' tokenizer (pieces, scores, types, space prefix):
    llama.cpp then splits text, spaces, digits and unknown characters (byte tokens) exactly as
    SentencePiece itself does, and runs the model like transformers. (SentencePiece is the referee:
    transformers 5's LlamaTokenizer places the leading space differently on some texts.)"""
    folder, sp, tokenizer, model = spm_llama
    ag.convert(folder, tmp_path / "m.gguf", type="Q8_0")
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_space_prefix"] is True
    n = sp.vocab_size()
    assert len(fields["tokenizer.ggml.tokens"]) == n + 8  # padded to the model's vocab_size
    assert fields["tokenizer.ggml.tokens"][:n] == [sp.id_to_piece(i) for i in range(n)]
    assert fields["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 8)]
    # The tokens transformers lists as added (<unk>, <s>, </s>) are control tokens of score -1000, as
    # llama.cpp's converter writes them; every other piece keeps SentencePiece's score and type.
    import json
    added = {a["id"] for a in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]}
    assert added == {0, 1, 2}
    scores = fields["tokenizer.ggml.scores"]
    assert np.allclose([scores[i] for i in range(n) if i not in added], [sp.get_score(i) for i in range(n) if i not in added])
    assert all(scores[i] == -1000.0 for i in added)
    types = fields["tokenizer.ggml.token_type"]
    assert types[0] == types[1] == types[2] == 3
    assert types[3] == 6 and types[3 + 255] == 6 and set(types[n:]) == {5}  # byte tokens, padding unused
    assert fields["tokenizer.ggml.unknown_token_id"] == 0 and fields["tokenizer.ggml.bos_token_id"] == 1
    runner = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=128, logits_all=True, verbose=False,
                             n_threads=1)
    assert min(sp.encode(SPM_TRICKY)) < 3 + 256  # the text needs byte tokens
    for text in (SPM_TRICKY, " leading space", "trailing  ", "x"):
        expected = sp.encode(text)
        assert runner.tokenize(text.encode(), add_bos=False) == expected, text
    tokens = [1] + sp.encode("the quick brown fox jumps over a sunny windowsill")
    runner.eval(tokens)
    ours = np.array(runner.scores[:len(tokens)])
    with torch.no_grad():
        reference = model(torch.tensor([tokens])).logits[0].numpy()
    assert min(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ours, reference)) >= 0.999


def test_sentencepiece_models_llama_cpp_would_tokenize_otherwise_are_refused(spm_llama, tmp_path):
    import shutil
    folder, _, _, _ = spm_llama
    for options, message in [(dict(model_type="unigram"), "a SentencePiece unigram model"),
                             (dict(byte_fallback=False), "without byte fallback"),
                             (dict(normalization_rule_name="nmt_nfkc"), "normalizer \\(nmt_nfkc"),
                             (dict(remove_extra_whitespaces=True), "removes extra whitespace")]:
        copy = tmp_path / f"copy-{options}"
        shutil.copytree(folder, copy)
        train_sentencepiece(copy / "tokenizer.model", **options)
        with pytest.raises(ParameterError, match=message):
            ag.convert(copy, tmp_path / "m.gguf", type="F32")
        assert not (tmp_path / "m.gguf").exists()


@needs_llama_cpp
def test_tokens_added_in_tokenizer_config_are_written(spm_llama, tmp_path):
    """added_tokens_decoder (tokenizer_config.json) places tokens past the pieces: special ones
    become control tokens llama.cpp matches whole when told to parse specials."""
    import json
    import shutil
    folder, sp, _, _ = spm_llama
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    n = sp.vocab_size()
    settings = json.loads((copy / "tokenizer_config.json").read_text())
    settings["added_tokens_decoder"] = {str(n): {"content": "<|tool|>", "special": True},
                                        str(n + 1): {"content": "arrow▁quant", "special": False}}
    (copy / "tokenizer_config.json").write_text(json.dumps(settings))
    ag.convert(copy, tmp_path / "m.gguf", type="F32")
    fields = {name: f.contents() for name, f in gguf.GGUFReader(str(tmp_path / "m.gguf")).fields.items()}
    assert fields["tokenizer.ggml.tokens"][n:n + 2] == ["<|tool|>", "arrow quant"]
    assert fields["tokenizer.ggml.token_type"][n:n + 2] == [3, 4]
    runner = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, verbose=False, n_threads=1)
    assert runner.tokenize(b"<|tool|>", add_bos=False, special=True) == [n]
    settings["added_tokens_decoder"] = {str(n + 8): {"content": "<|beyond|>", "special": True}}
    (copy / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(FileFormatError, match=f"tokenizer_config.json: {n + 9} tokens, but the model's vocab_size "
                                              f"is {n + 8}"):
        ag.convert(copy, tmp_path / "m2.gguf", type="F32")


def test_damaged_sentencepiece_models_are_one_clear_error(spm_llama, tmp_path):
    import shutil
    folder, _, _, _ = spm_llama
    good = (folder / "tokenizer.model").read_bytes()
    rng = np.random.default_rng(0)
    damaged = [good[:len(good) // 2], b"", rng.bytes(4000), b"\x0a\xff\xff\xff\xff\x0f" + good,
               b"\x0b" + good, bytes([0x0a, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd])]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for data in damaged:
        (copy / "tokenizer.model").write_bytes(data)
        with pytest.raises((FileFormatError, ParameterError), match="tokenizer.model"):
            ag.convert(copy, tmp_path / "m.gguf", type="F32")
        assert not (tmp_path / "m.gguf").exists()


def qwen_tokenizer():
    """A byte-level BPE tokenizer with Qwen2's split (digits one at a time) and NFC normalizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from arrowquant.gguf.llm import QWEN2_SPLIT
    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), "isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator((TEXT + [TRICKY]) * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


@pytest.fixture(scope="module", params=["qwen2", "qwen3"])
def qwen(request, tmp_path_factory):
    """A Qwen2 model (attention biases) or a Qwen3 one (per-head query / key norms, head_dim not
    hidden_size / heads), both with tied embeddings and grouped-query attention."""
    tokenizer = qwen_tokenizer()
    torch.manual_seed(3)
    common = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    if request.param == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=64, **common)).eval()
    with torch.no_grad():  # transformers starts biases at zero and norms at one: make them count
        for layer in model.model.layers:
            attention = layer.self_attn
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                if proj.bias is not None:
                    proj.bias.normal_(0, 0.5)
            for norm in (getattr(attention, "q_norm", None), getattr(attention, "k_norm", None)):
                if norm is not None:
                    norm.weight.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp(request.param) / f"tiny-{request.param}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return request.param, folder, model, tokenizer


@needs_llama_cpp
@pytest.mark.parametrize("mix,floor", [("F32", 0.99999), ("Q8_0", 0.999)])
def test_qwen_models_run_in_llama_cpp_like_transformers(qwen, tmp_path, mix, floor):
    """Qwen2 and Qwen3 become llama.cpp's qwen2 / qwen3 architectures: projection biases or per-head
    query / key norms, no rope permutation, the output tied to the token embedding, the qwen2
    pre-tokenizer; llama.cpp's logits match transformers' and it tokenizes digits, punctuation and
    newlines as the Hugging Face tokenizer."""
    arch, folder, model, tokenizer = qwen
    report = ag.convert(folder, tmp_path / "m.gguf", type=mix)
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == arch and fields["tokenizer.ggml.pre"] == "qwen2"
    assert fields[f"{arch}.block_count"] == 2 and fields[f"{arch}.attention.head_count_kv"] == 2
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names
    extra = ({"blk.0.attn_q.bias", "blk.1.attn_k.bias", "blk.1.attn_v.bias"} if arch == "qwen2"
             else {"blk.0.attn_q_norm.weight", "blk.1.attn_k_norm.weight"})
    assert extra <= names
    types = {n: t["type"] for n, t in report["components"]["model"]["tensors"].items()}
    assert all(types[n] == "F32" for n in extra)
    if arch == "qwen3":
        assert fields["qwen3.attention.key_length"] == 64 and fields["qwen3.embedding_length"] == 128
    runner = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=128, logits_all=True, verbose=False,
                             n_threads=1)
    assert runner.tokenize(TRICKY.encode(), add_bos=False) == tokenizer(TRICKY).input_ids
    tokens = tokenizer("the quick brown fox jumps over a sunny windowsill 2026").input_ids
    runner.eval(tokens)
    ours = np.array(runner.scores[:len(tokens)])
    with torch.no_grad():
        reference = model(torch.tensor([tokens])).logits[0].numpy()
    cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ours, reference)]
    assert min(cosines) >= floor
    if mix == "F32":
        assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()


def test_tokenizer_json_with_bad_ids_is_one_clear_error(llm, tmp_path):
    import json
    import shutil
    folder, _, _ = llm
    for damage, message in [(lambda t: t["model"]["vocab"].update({"zz": -3}), "'zz' has id '-3'"),
                            (lambda t: t["model"]["vocab"].update({"zz": "7"}), "'zz' has id '7'"),
                            (lambda t: t.update({"added_tokens": [{"content": "<x>", "id": 10**9}]}),
                             "1000000001 tokens, but the model's vocab_size"),
                            (lambda t: t.update({"added_tokens": "nope"}), "'added_tokens' must be a list")]:
        copy = tmp_path / f"copy-{len(list(tmp_path.glob('copy-*')))}"
        shutil.copytree(folder, copy)
        tok = json.loads((copy / "tokenizer.json").read_text())
        damage(tok)
        (copy / "tokenizer.json").write_text(json.dumps(tok))
        with pytest.raises(FileFormatError, match=message):
            ag.convert(copy, tmp_path / "m.gguf", type="F32")
        assert not (tmp_path / "m.gguf").exists()


@needs_llama_cpp
def test_a_tiktoken_file_named_tokenizer_model_leaves_tokenizer_json_in_charge(llm, tmp_path):
    """Some byte-level BPE models ship tiktoken's file as tokenizer.model: it is not a SentencePiece
    model, so tokenizer.json decides, as llama.cpp's converter does."""
    import shutil
    folder, _, tokenizer = llm
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "tokenizer.model").write_text("IQ== 0\nIg== 1\nIw== 2\n")
    ag.convert(copy, tmp_path / "m.gguf", type="F32")
    fields = {name: f.contents() for name, f in gguf.GGUFReader(str(tmp_path / "m.gguf")).fields.items()}
    assert fields["tokenizer.ggml.model"] == "gpt2" and len(fields["tokenizer.ggml.tokens"]) == len(tokenizer)


@needs_llama_cpp
def test_phi3_runs_in_llama_cpp_like_transformers(tmp_path):
    """Phi-3 becomes llama.cpp's phi3 architecture: the fused query-key-value and gate-up
    projections as attn_qkv / ffn_up, its SentencePiece tokenizer with the chat tokens transformers
    keeps in tokenizer.json; llama.cpp's logits match transformers' at F32 and Q8_0, and it finds a
    chat token whole."""
    folder = tmp_path / "tiny-phi3"
    folder.mkdir()
    sp = train_sentencepiece(folder / "tokenizer.model")
    tokenizer = transformers.LlamaTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|user|>"]})
    tokenizer.save_pretrained(folder)
    n = sp.vocab_size()
    torch.manual_seed(4)
    config = transformers.Phi3Config(vocab_size=n + 8, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                     bos_token_id=1, eos_token_id=n, pad_token_id=n)
    model = transformers.Phi3ForCausalLM(config).eval()
    model.save_pretrained(folder)
    report = ag.convert(folder, tmp_path / "f32.gguf", type="F32")
    reader = gguf.GGUFReader(str(tmp_path / "f32.gguf"))
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "phi3" and fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.tokens"][n:n + 2] == ["<|endoftext|>", "<|user|>"]
    assert fields["tokenizer.ggml.token_type"][n:n + 2] == [3, 3]
    assert fields["phi3.rope.scaling.original_context_length"] == 4096
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_qkv.weight", "blk.1.ffn_up.weight", "output.weight"} <= names
    q4 = ag.convert(folder, tmp_path / "q4.gguf", type="Q4_K_M")["components"]["model"]["tensors"]
    assert q4["blk.1.attn_qkv.weight"]["type"] == "Q6_K"  # llama-quantize treats attn_qkv as attn_v
    tokens = [1] + sp.encode("the quick brown fox jumps over a sunny windowsill")
    with torch.no_grad():
        reference = model(torch.tensor([tokens])).logits[0].numpy()
    for path, floor in ((tmp_path / "f32.gguf", 0.99999), (tmp_path / "q8.gguf", 0.999)):
        if not path.exists():
            ag.convert(folder, path, type="Q8_0")
        runner = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=1)
        assert runner.tokenize(b"<|user|>", add_bos=False, special=True) == [n + 1]
        assert runner.tokenize(SPM_TRICKY.encode(), add_bos=False) == sp.encode(SPM_TRICKY)
        runner.eval(tokens)
        ours = np.array(runner.scores[:len(tokens)])
        assert min(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ours, reference)) >= floor


def test_rope_scaling_llama_cpp_would_apply_differently_is_refused(llm, tmp_path):
    import json
    import shutil
    folder, _, _ = llm
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 8.0}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ParameterError, match=r"rope scaling 'yarn' is not supported yet \(llama3 is\)"):
        ag.convert(copy, tmp_path / "m.gguf", type="F32")
    assert not (tmp_path / "m.gguf").exists()


@needs_llama_cpp
def test_llama_3_1_rope_scaling_runs_in_llama_cpp_like_transformers(llm, tmp_path):
    """Llama 3.1's "llama3" rope scaling (refused before): rope_freqs.weight written as llama.cpp's
    converter computes it; with an original context of 16 tokens most frequencies are scaled, and
    llama.cpp's logits equal transformers' on the same tokens."""
    _, _, tokenizer = llm
    torch.manual_seed(3)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                                      rope_theta=500000.0,
                                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    model = transformers.LlamaForCausalLM(config).eval()
    folder = tmp_path / "llama31"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = ag.convert(folder, tmp_path / "m.gguf", type="F32")
    assert report["components"]["model"]["tensors"]["rope_freqs.weight"]["type"] == "F32"
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert stored["rope_freqs.weight"].shape == (32,) and stored["rope_freqs.weight"].max() == 8.0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".arrowquant")]
    import arrowquant as aq
    assert aq.validate_quality(folder, tmp_path / "m.gguf")["passed"]
    tokens = tokenizer("the quick brown fox jumps over a sunny windowsill and the lazy dog sleeps").input_ids
    ours, _ = llama_logits(tmp_path / "m.gguf", tokens)
    with torch.no_grad():
        theirs = model(torch.tensor([tokens])).logits[0].numpy()
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()
    # without the factors the positions differ: the check above can fail
    settings = {**config.to_dict(), "rope_scaling": None}
    if "rope_parameters" in settings:  # transformers 5 keeps the scaling here
        settings["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    plain = transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings))
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        unscaled = plain.eval()(torch.tensor([tokens])).logits[0].numpy()
    assert np.abs(unscaled - theirs).max() > 1e-2 * np.abs(theirs).max()


@pytest.fixture(scope="module")
def plain_llama(tmp_path_factory):
    from tokenizers import pre_tokenizers
    return tiny_llama_with(tmp_path_factory.mktemp("plain"), pre_tokenizers.ByteLevel(add_prefix_space=False))[0]


def with_config(folder, tmp_path, **changes):
    import json
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **changes}))
    return copy


@pytest.mark.parametrize("changes, message", [
    ({"vocab_size": 1099511627776}, "'vocab_size' must be a positive integer up to 16777216"),
    ({"vocab_size": 1000}, r"has shape \[\d+, 64\], but config.json implies \[1000, 64\]"),
    ({"hidden_size": 4096}, "but config.json implies"),
    ({"num_key_value_heads": "2"}, "'num_key_value_heads' must be a positive integer"),
    ({"num_key_value_heads": -2}, "'num_key_value_heads' must be a positive integer"),
    ({"num_key_value_heads": 3}, "2 attention heads do not share 3 key/value heads evenly"),
    ({"head_dim": 16.5}, "'head_dim' must be a positive integer"),
    ({"rope_theta": "abc"}, "'rope_theta' must be a number"),
    ({"rms_norm_eps": "abc"}, "'rms_norm_eps' must be a number"),
    ({"num_hidden_layers": 2 ** 40}, "'num_hidden_layers' must be a positive integer"),
])
def test_a_config_contradicting_or_lying_about_the_tensors_is_one_line_before_anything_is_sized(
        plain_llama, tmp_path, changes, message):
    """Issue 22: sizes from config.json are bounded and checked against the tensors before any list
    is sized by them (a vocab_size of 2^40 exhausted memory), and hostile values are one error."""
    import tracemalloc
    copy = with_config(plain_llama, tmp_path, **changes)
    tracemalloc.start()
    with pytest.raises(FileFormatError, match=message):
        ag.convert(copy, tmp_path / "m.gguf", type="Q8_0")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20, peak
    assert not (tmp_path / "m.gguf").exists()


def test_an_architectures_entry_that_is_not_a_name_is_not_a_language_model(plain_llama, tmp_path):
    copy = with_config(plain_llama, tmp_path, architectures=[["LlamaForCausalLM"]])
    from arrowquant.gguf.llm import llm_config
    assert llm_config(copy) is None  # was: TypeError (unhashable list)


def test_a_tokenizer_model_with_more_pieces_than_the_vocabulary_stops_early(spm_llama, tmp_path):
    import shutil
    folder, sp, _, _ = spm_llama
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    piece = bytes([0x0a, 0x02, 0x0a, 0x00])  # field 1: a piece message holding an empty text
    (copy / "tokenizer.model").write_bytes(piece * 1_000_000 + (copy / "tokenizer.model").read_bytes())
    with pytest.raises((FileFormatError, ParameterError), match="more than .* pieces, the model.s vocab_size"):
        ag.convert(copy, tmp_path / "m.gguf", type="F32")


def edit_tokenizer_json(folder, tmp_path, edit):
    import json
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    tok = json.loads((copy / "tokenizer.json").read_text())
    edit(tok)
    (copy / "tokenizer.json").write_text(json.dumps(tok))
    return copy


def _set_merges_string(tok):
    tok["model"]["merges"] = "a b"


def _set_merges_triples(tok):
    tok["model"]["merges"] = [["a", "b", "c"]]


def _duplicate_id(tok):
    vocab = tok["model"]["vocab"]
    first, second = list(vocab)[10:12]
    vocab[second] = vocab[first]


def _pattern_string(tok):
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": "x"},
                                                                   {"type": "ByteLevel", "use_regex": False}]}


def _pattern_list(tok):
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": [1]}},
                                                                   {"type": "ByteLevel", "use_regex": False}]}


def _pre_tokenizer_string(tok):
    tok["pre_tokenizer"] = "ByteLevel"


def _superscript_added_id(tok):
    tok["added_tokens"] = [{"id": "²", "content": "<x>", "special": True}]


@pytest.mark.parametrize("edit, error, message", [
    (_set_merges_string, FileFormatError, "'merges' must be a list"),  # was split into characters
    (_set_merges_triples, FileFormatError, "'merges' must be a list"),
    (_duplicate_id, FileFormatError, "both have id"),  # one was silently dropped
    (_pattern_string, ParameterError, "pre-tokenizer"),
    (_pattern_list, ParameterError, "pre-tokenizer"),
    (_pre_tokenizer_string, ParameterError, "pre-tokenizer"),
    (_superscript_added_id, FileFormatError, "is not a non-negative id"),  # was ValueError from int("²")
])
def test_hostile_tokenizer_json_values_are_one_clear_error(plain_llama, tmp_path, edit, error, message):
    copy = edit_tokenizer_json(plain_llama, tmp_path, edit)
    with pytest.raises(error, match=message):
        ag.convert(copy, tmp_path / "m.gguf", type="Q8_0")
    assert not (tmp_path / "m.gguf").exists()


def test_config_json_through_a_symlink_leaving_the_folder_is_refused(plain_llama, tmp_path):
    import shutil
    from arrowquant.errors import UnsafePathError
    copy = tmp_path / "copy"
    shutil.copytree(plain_llama, copy)
    outside = tmp_path / "elsewhere.json"
    (copy / "config.json").rename(outside)
    (copy / "config.json").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="leads outside"):
        ag.convert(copy, tmp_path / "m.gguf", type="Q8_0")


def test_validate_maps_llama_cpp_names_back_and_compares_every_tensor(llm, tmp_path):
    """Issue 22: validate reported 42 problems for a language-model GGUF (names never mapped) and
    compared nothing. Every tensor is now compared with its Hugging Face original, the query and
    key projections in llama.cpp's rotary layout; the rotary buffers llama.cpp does not load are
    skipped, not missing."""
    import arrowquant as aq
    folder, _, _ = llm
    ag.convert(folder, tmp_path / "m.gguf", type="Q4_K_M")
    report = aq.validate_quality(folder, tmp_path / "m.gguf")
    assert report["problems"] == [] and report["passed"], report["failed_layers"]
    assert "model.layers.0.self_attn.q_proj.weight" in report["layers"]
    assert len(report["layers"]) == len(gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors)
    assert 0.97 < report["layers"]["model.layers.0.self_attn.q_proj.weight"]["cosine"] < 1
    ag.convert(folder, tmp_path / "f32.gguf", type="F32")
    exact = aq.validate_quality(folder, tmp_path / "f32.gguf")
    assert exact["passed"] and min(v["cosine"] for v in exact["layers"].values()) > 0.999999


@needs_llama_cpp
def test_a_qwen2_5_vl_text_model_runs_in_llama_cpp_like_transformers(tmp_path):
    """Qwen-Image's text encoder, Qwen2.5-VL: the text model becomes llama.cpp's qwen2vl (its rope
    sections in the metadata, padded to four), the vision tower is left out with its reason
    (llama.cpp reads it from a separate mmproj file), and on text llama.cpp's logits match
    transformers' (every section sees the same positions then)."""
    tokenizer = qwen_tokenizer()
    torch.manual_seed(4)
    config = transformers.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         # llama.cpp 0.3.36's qwen2vl does not read layer_norm_rms_epsilon (its qwen2
                         # does; the file holds it, as llama.cpp's converter writes it): an epsilon
                         # that matters for nothing here keeps the comparison about the rest.
                         rms_norm_eps=1e-12),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=128,
                           fullatt_block_indexes=[0]))
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    folder = tmp_path / "tiny-qwen2.5-vl"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = ag.convert(folder, tmp_path / "te.gguf", type="F32")
    fields = {name: f.contents() for name, f in gguf.GGUFReader(str(tmp_path / "te.gguf")).fields.items()}
    assert fields["general.architecture"] == "qwen2vl" and fields["qwen2vl.rope.dimension_sections"] == [4, 6, 6, 0]
    assert fields["qwen2vl.embedding_length"] == 128 and fields["tokenizer.ggml.pre"] == "qwen2"
    assert fields["qwen2vl.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-12)
    why = report["components"]["model"]["why_dropped"]
    assert why and all(name.startswith(("visual.", "model.visual.")) and "mmproj" in reason for name, reason in why.items())
    runner = llama_cpp.Llama(model_path=str(tmp_path / "te.gguf"), n_ctx=128, logits_all=True, verbose=False,
                             n_threads=1)
    tokens = tokenizer("the quick brown fox jumps over a sunny windowsill 2026").input_ids
    runner.eval(tokens)
    ours = np.array(runner.scores[:len(tokens)])
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([tokens])).logits[0].numpy()
    assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()
    bad = tmp_path / "bad"
    model.save_pretrained(bad)
    tokenizer.save_pretrained(bad)
    import json
    cfg = json.loads((bad / "config.json").read_text())
    cfg["text_config"]["rope_parameters"]["mrope_section"] = [4, 6, 7]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match=r"mrope_section \[4, 6, 7\] covers 17 rotary pairs; the heads have 16"):
        ag.convert(bad, tmp_path / "bad.gguf")
