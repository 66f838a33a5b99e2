"""T5 / UMT5 text encoders to llama.cpp's t5encoder GGUF, judged by transformers (which loads the
file with gguf_file=), llama.cpp (which tokenizes with the vocabulary written into it), SentencePiece
itself and gguf-py; and ComfyUI-GGUF's text-encoder key mapping, encoded here as its loader applies
it (ComfyUI is not on the package index)."""

import io
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
gguf = pytest.importorskip("gguf")

from arrowquant import gguf as aq_gguf  # noqa: E402
from arrowquant.errors import FileFormatError, ParameterError  # noqa: E402

try:
    import llama_cpp
except ImportError:  # pragma: no cover - make test builds it
    llama_cpp = None

# ComfyUI-GGUF's loader.py maps a t5encoder GGUF's names back to the Hugging Face keys ComfyUI's T5
# class loads, by these substring replacements in this order.
COMFY_T5_MAP = {"enc.": "encoder.", ".blk.": ".block.", "token_embd": "shared", "output_norm": "final_layer_norm",
                "attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k",
                "attn_v": "layer.0.SelfAttention.v", "attn_o": "layer.0.SelfAttention.o",
                "attn_norm": "layer.0.layer_norm", "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
                "ffn_up": "layer.1.DenseReluDense.wi_1", "ffn_down": "layer.1.DenseReluDense.wo",
                "ffn_gate": "layer.1.DenseReluDense.wi_0", "ffn_norm": "layer.1.layer_norm"}
CONFIG = dict(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
              relative_attention_num_buckets=32, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
TEXTS = ["The quick brown fox jumps", "  over   the lazy dog 42 times!", "Grüße, 東京 said the encoder"]


def comfy_name(name: str) -> str:
    for source, target in COMFY_T5_MAP.items():
        name = name.replace(source, target)
    return name


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    text = [f"The quick brown fox {i} jumps over the lazy dog {i * 7} times, said the encoder." for i in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=200,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    path = tmp_path_factory.mktemp("spiece") / "spiece.model"
    path.write_bytes(model.getvalue())
    return path


def make_encoder(folder, spiece, kind="T5EncoderModel", **changes):
    config_class = transformers.UMT5Config if kind.startswith("UMT5") else transformers.T5Config
    torch.manual_seed(0)
    model = getattr(transformers, kind)(config_class(**{**CONFIG, **changes})).eval()
    model.save_pretrained(folder)
    shutil.copy(spiece, folder / "spiece.model")
    return model


@pytest.fixture(scope="module", params=["T5EncoderModel", "UMT5EncoderModel"])
def encoder(request, tmp_path_factory, spiece):
    folder = tmp_path_factory.mktemp(request.param.lower())
    model = make_encoder(folder, spiece, request.param)
    files = {t: folder.parent / f"{folder.name}-{t}.gguf" for t in ("F32", "Q8_0", "Q4_K_M")}
    reports = {t: aq_gguf.convert(folder, path, t) for t, path in files.items()}
    return request.param, folder, model, files, reports


def encode(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).last_hidden_state.flatten()


def test_transformers_loads_the_encoder_and_computes_what_the_float_model_does(encoder):
    kind, folder, model, files, _ = encoder
    config = transformers.AutoConfig.from_pretrained(files["F32"].parent, gguf_file=files["F32"].name)
    for key in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets", "vocab_size"):
        assert getattr(config, key) == getattr(model.config, key), key
    assert config.architectures == [kind]  # UMT5 told apart by general.name
    ids = [5, 17, 33, 100, 7, 1]
    reference = encode(model, ids)
    for gguf_type, least in (("F32", 0.99999), ("Q8_0", 0.9999), ("Q4_K_M", 0.995)):
        path = files[gguf_type]
        # transformers reads a t5encoder's FFN as ReLU-gated; the weights are what is judged here
        loaded = getattr(transformers, kind).from_pretrained(path.parent, gguf_file=path.name, config=model.config)
        out = encode(loaded.eval(), ids)
        cosine = torch.nn.functional.cosine_similarity(reference, out, dim=0).item()
        assert cosine >= least, (gguf_type, cosine)
        if gguf_type == "F32":
            assert torch.equal(reference, out)


def test_types_and_names_follow_llama_quantize_and_comfyui_gguf(encoder):
    kind, folder, model, files, reports = encoder
    tensors = reports["Q4_K_M"]["components"]["model"]["tensors"]
    assert reports["Q4_K_M"]["kind"] == "text_encoder"
    for name, t in tensors.items():
        if name.endswith("attn_rel_b.weight"):
            assert t["type"] == "F32"  # llama-quantize leaves the relative position bias unquantized
        elif name.endswith("norm.weight"):
            assert t["type"] == "F32"
        else:
            assert t["type"] not in ("F32", "F16", "BF16"), name
    reader = gguf.GGUFReader(files["Q4_K_M"])
    assert reader.fields["general.architecture"].contents() == "t5encoder"
    assert reader.fields["t5encoder.block_count"].contents() == CONFIG["num_layers"]
    hf_names = set(model.state_dict()) - {"encoder.embed_tokens.weight"}  # tied to shared.weight
    assert {comfy_name(t.name) for t in reader.tensors} == hf_names
    for t in reader.tensors:  # every tensor decodes to the model's values (gguf-py's own decoders)
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(model.state_dict()[comfy_name(t.name)].shape)
        original = model.state_dict()[comfy_name(t.name)].numpy()
        error = np.linalg.norm(values - original) / np.linalg.norm(original)
        assert error < 0.08, (t.name, error)


def test_the_vocabulary_tokenizes_as_sentencepiece_in_llama_cpp(encoder, spiece):
    kind, folder, model, files, _ = encoder
    reader = gguf.GGUFReader(files["Q8_0"])
    processor = spm.SentencePieceProcessor(model_file=str(spiece))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[:processor.get_piece_size()] == [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    assert len(tokens) == CONFIG["vocab_size"]
    assert reader.fields["tokenizer.ggml.model"].contents() == "t5"
    if llama_cpp is None:
        if os.environ.get("ARROWQUANT_REQUIRE_REFEREES") == "1":
            pytest.fail("llama-cpp-python is not installed (make test builds it)")
        pytest.skip("llama-cpp-python is not installed")
    runner = llama_cpp.Llama(model_path=str(files["Q8_0"]), vocab_only=True, verbose=False)
    for text in TEXTS:  # with EOS appended, as T5 does
        assert runner.tokenize(text.encode(), add_bos=True, special=False) == processor.encode(text) + [1], text


def test_a_seq2seq_checkpoint_gives_its_encoder_and_lists_the_decoder(tmp_path, spiece):
    make_encoder(tmp_path / "m", spiece, "T5ForConditionalGeneration")
    report = aq_gguf.convert(tmp_path / "m", tmp_path / "m.gguf", "Q8_0")
    dropped = report["components"]["model"]["tensors_dropped"]
    assert dropped and all(n.startswith(("decoder.", "lm_head.")) for n in dropped)
    names = {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert not any(n.startswith("dec.") for n in names) and "enc.output_norm.weight" in names


@pytest.mark.parametrize("change, error, message", [
    ({"feed_forward_proj": "gated-silu"}, ParameterError, "feed_forward_proj 'gated-silu'"),
    ({"d_ff": "128"}, FileFormatError, "'d_ff' must be a positive integer"),
    ({"d_model": 32}, FileFormatError, "but config.json implies"),
    ({"num_layers": 1}, FileFormatError, "past the 1 layers"),
])
def test_a_config_that_contradicts_the_weights_is_one_clear_error(tmp_path, spiece, change, error, message):
    make_encoder(tmp_path / "m", spiece)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")):
        aq_gguf.convert(tmp_path / "m", tmp_path / "m.gguf", "Q8_0")
    assert not (tmp_path / "m.gguf").exists()


def test_without_its_vocabulary_the_encoder_is_refused_by_name(tmp_path, spiece):
    make_encoder(tmp_path / "m", spiece)
    (tmp_path / "m" / "spiece.model").unlink()
    with pytest.raises(ParameterError, match="no spiece.model"):
        aq_gguf.convert(tmp_path / "m", tmp_path / "m.gguf", "Q8_0")
